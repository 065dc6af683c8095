//! Alerts on the exec stream: patterns an organisation wants to hear about at once when
//! anyone runs them on a host (reading `/etc/shadow`, stopping auditd, a shell fetched with
//! curl), whether the run was allowed or refused. Matched against every exec an agent
//! reports (the first command of a session, and with `intercept` every command inside it);
//! a match is an `exec.alert` audit event and a high-severity notice.

/// Compiled size limit of one pattern (the `regex` crate matches in linear time; this
/// bounds its memory).
const MAX_PATTERN_BYTES: usize = 1 << 20;

/// One alert: a name for people and a regular expression over the command line.
#[derive(Debug, Clone)]
pub struct ExecAlert {
    pub name: String,
    pattern: regex::Regex,
}

impl ExecAlert {
    /// Compiles `pattern` (`regex` crate syntax), found anywhere in the command line (the
    /// arguments joined with single spaces).
    pub fn new(name: &str, pattern: &str) -> Result<ExecAlert, String> {
        crate::model::validate_name("alert", name).map_err(|e| e.to_string())?;
        let pattern = regex::RegexBuilder::new(pattern)
            .size_limit(MAX_PATTERN_BYTES)
            .build()
            .map_err(|e| format!("alert {name}: pattern {pattern:?}: {e}"))?;
        Ok(ExecAlert {
            name: name.to_string(),
            pattern,
        })
    }

    pub fn matches(&self, argv: &[String]) -> bool {
        self.pattern.is_match(&argv.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_matches_anywhere_in_the_command_line() {
        let a = ExecAlert::new(
            "auditd-stopped",
            r"systemctl\s+(stop|disable|mask)\s+auditd",
        )
        .unwrap();
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(a.matches(&argv("/usr/bin/systemctl stop auditd")));
        assert!(!a.matches(&argv("/usr/bin/systemctl status auditd")));
        assert!(
            ExecAlert::new("bad", "(")
                .unwrap_err()
                .contains("alert bad")
        );
        assert!(ExecAlert::new("no spaces", "x").is_err());
    }
}
