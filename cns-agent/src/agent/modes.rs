//! The audit mode's settings as the agent holds them ([`Modes`], with its one precedence
//! function) and their changes: from the source, from `cns-agent mode`, and their record in
//! the log, the history and the metrics.

use super::{Agent, AgentError, now_rfc3339};
use crate::{
    error_chain, history,
    policy::{AuditMode, mode},
};

impl Agent {
    /// The source's `policyAuditMode` (`None`: it sets none, the flag rules).
    pub(super) fn set_source_mode(&mut self, source: Option<AuditMode>) {
        if source == self.modes.source {
            return;
        }
        let (before, configured) = (self.modes.global(), self.modes.configured());
        self.modes.source = source;
        if self.modes.configured() == configured {
            return;
        }
        tracing::info!(
            scope = "global",
            from = %configured,
            to = %self.modes.configured(),
            by = "source configuration (policyAuditMode)",
            "configured policy audit mode changed"
        );
        self.global_changed(before);
        self.count_mode_change("global", "source", configured, self.modes.configured());
    }

    /// Writes the global mode if it changed from `before`.
    fn global_changed(&mut self, before: AuditMode) {
        if self.modes.global() != before
            && let Err(e) = self.write_config()
        {
            tracing::error!(error = %error_chain(&e), "failed to write the mode");
        }
    }

    /// A namespace's effective mode.
    pub(super) fn namespace_mode(&self, ns: &str) -> AuditMode {
        let annotation = self
            .compiler
            .snapshot()
            .namespaces
            .get(ns)
            .and_then(|n| mode::annotation(n));
        self.modes.of_namespace(ns, annotation)
    }

    /// Applies a runtime mode override (`cns-agent mode`): global, or for one namespace;
    /// `None` returns to the configured mode. Returns the resulting effective mode.
    pub fn set_mode(
        &mut self,
        audit: Option<AuditMode>,
        namespace: Option<String>,
    ) -> Result<AuditMode, AgentError> {
        let by = "cns-agent mode (control socket)";
        match namespace {
            None => {
                let before = self.modes.global();
                self.modes.runtime = audit;
                let after = self.modes.global();
                tracing::info!(
                    scope = "global",
                    from = %before,
                    to = %after,
                    override_set = audit.is_some(),
                    by,
                    "policy audit mode changed"
                );
                self.write_config()?;
                self.publish_names();
                self.count_mode_change("global", "cli", before, after);
                Ok(after)
            }
            Some(ns) => {
                let before = self.namespace_mode(&ns);
                match audit {
                    Some(a) => _ = self.modes.namespaces.insert(ns.clone(), a),
                    None => _ = self.modes.namespaces.remove(&ns),
                }
                self.sync()?;
                let after = self.namespace_mode(&ns);
                tracing::info!(
                    scope = %ns,
                    from = %before,
                    to = %after,
                    override_set = audit.is_some(),
                    by,
                    "policy audit mode changed"
                );
                self.count_mode_change(&format!("namespace {ns}"), "cli", before, after);
                Ok(after)
            }
        }
    }

    fn count_mode_change(&mut self, scope: &str, by: &str, from: AuditMode, to: AuditMode) {
        self.history.record(history::Change {
            time: now_rfc3339(),
            revision: self.revision,
            by: by.into(),
            mode_change: Some(format!("{scope}: {from} -> {to}")),
            ..history::Change::default()
        });
        self.metrics
            .mode_changes
            .get_or_create(&vec![
                ("scope".to_owned(), scope.to_owned()),
                ("by".to_owned(), by.to_owned()),
            ])
            .inc();
        self.record_mode_metrics();
    }

    pub(super) fn record_mode_metrics(&self) {
        let m = &self.metrics;
        let set = |ns: &str, mode: AuditMode| {
            m.mode
                .get_or_create(&vec![("namespace".to_owned(), ns.to_owned())])
                .set(i64::from(mode.is_audit()));
        };
        set("", self.modes.global());
        for ns in self.compiler.snapshot().namespaces.keys() {
            set(ns, self.namespace_mode(ns));
        }
    }
}
