//! Empty on purpose: the kernel programs are the `cns` binary (src/main.rs). This library
//! target lets `cns-agent` list the crate as a build-dependency, so edits rebuild the agent.
#![no_std]
