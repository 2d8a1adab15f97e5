//! The pure policy core: validate objects, compile a snapshot into the desired datapath
//! state, and evaluate flows against the same snapshot (the reference the tests and
//! `policy explain` use). No I/O, no clock, no tokio, no aya in here.

pub mod model;
