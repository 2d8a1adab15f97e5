//! The I/O of `cns-agent policy diff`: reads the manifests, asks the running agent for its
//! live state (or reads `--from DIR` instead), prints, and exits as `diff` does: 0 when
//! nothing would change, 1 when something would, 2 on errors.

use std::path::Path;

use crate::{
    check,
    cli::{DiffArgs, Output},
    control::{self, Request},
    error_chain,
    policy::model::{NodeContext, Snapshot},
    source::{self, LastGood},
};

use super::{Apply, LiveState, combine, compare, render, states_of};

pub const EXIT_SAME: u8 = 0;
pub const EXIT_DIFFERENT: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

/// Reads manifests (a directory of `*.yaml`/`*.yml`, or one file) as the agent would; any
/// invalid object or file is an error (a review should not pass over it).
pub fn load(path: &Path) -> Result<Snapshot, Vec<String>> {
    let files = check::read(&[path.to_path_buf()]);
    let (snapshot, errors) = source::load(&files, &mut LastGood::default());
    if errors.is_empty() {
        Ok(snapshot)
    } else {
        Err(errors.iter().map(ToString::to_string).collect())
    }
}

/// The current side: `--from DIR`, or the agent's live state. Also its label.
async fn current(args: &DiffArgs) -> Result<(Snapshot, Option<NodeContext>, String), Vec<String>> {
    if let Some(from) = &args.from {
        let node = args.node_name.as_ref().map(|n| NodeContext {
            node_name: n.clone(),
            ..NodeContext::default()
        });
        let label = match &node {
            Some(n) => format!("{} (node {})", from.display(), n.node_name),
            None => format!("{} (every node)", from.display()),
        };
        return Ok((load(from)?, node, label));
    }
    let reply = control::call(&args.client.socket, &Request::Snapshot)
        .await
        .map_err(|e| vec![error_chain(&e)])?;
    if !reply.ok {
        return Err(vec![
            reply
                .error
                .unwrap_or_else(|| "the agent reported a failure".into()),
        ]);
    }
    let live: LiveState = serde_json::from_value(reply.data)
        .map_err(|e| vec![format!("the agent sent an invalid snapshot: {e}")])?;
    let label = format!("the agent on node {} ({})", live.node_name, live.source);
    let (snapshot, node) = live.into_parts();
    Ok((snapshot, Some(node), label))
}

/// Runs the command; returns the exit code.
pub async fn run(args: &DiffArgs) -> u8 {
    let new_dir = load(&args.dir);
    let current = current(args).await;
    let ((old, node, from_label), new_dir) = match (current, new_dir) {
        (Ok(c), Ok(n)) => (c, n),
        (c, n) => {
            for e in c.err().into_iter().chain(n.err()).flatten() {
                eprintln!("error: {e}");
            }
            return EXIT_ERROR;
        }
    };
    let apply = if args.merge {
        Apply::Merge
    } else {
        Apply::Replace
    };
    let new = combine(&old, new_dir, apply);
    let diff = compare(
        &old,
        &states_of(&old, node.as_ref()),
        &new,
        &states_of(&new, node.as_ref()),
    );
    if args.output == Output::Json {
        match serde_json::to_string_pretty(&diff) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: failed to encode the diff: {e}");
                return EXIT_ERROR;
            }
        }
    } else {
        let to_label = format!(
            "{}{}",
            args.dir.display(),
            if args.merge { " (merged)" } else { "" }
        );
        print!("{}", render::text(&diff, &from_label, &to_label));
    }
    if diff.is_empty() {
        EXIT_SAME
    } else {
        EXIT_DIFFERENT
    }
}
