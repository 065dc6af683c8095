//! The README's policy examples, exactly as written (read from README.md), applied together
//! with the default policies: each decides as the README says. Guards the combining rule
//! (the strictest applicable permit wins): the README's `dev-prod-root` (a lead, then two
//! of security) must not be shadowed by the default `request-with-approval` (one approval).

mod common;

use common::*;

/// Every ```cedar block of the README, in order.
fn readme_cedar_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))
        .expect("README.md");
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines() {
        let t = line.trim();
        match &mut current {
            None if t == "```cedar" => current = Some(Vec::new()),
            Some(b) if t == "```" => {
                // Blocks indented in a list item keep their relative indentation.
                blocks.push(b.join("\n"));
                current = None;
            }
            Some(b) => b.push(line),
            None => {}
        }
    }
    blocks
}

const CASES: &str = r#"
[[case]]
name = "dev-prod-root: a lead, then two of security (not the default single approval)"
principal = { user = "dave", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "needs_approval"
approvals = "leads:1, security:2"
max_duration = "1h"
policy = "dev-prod-root"

[[case]]
name = "dev-prod-root: longer than its 1h is refused, not handed to a looser permit"
principal = { user = "dave", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "2h", source_ip = "10.1.2.3" }
expect = "deny"
policy = "dev-prod-root"

[[case]]
name = "payments-follow-ups: one of security, reminded and escalated while nobody answers"
principal = { user = "erin", groups = ["payments"] }
target = { name = "pay1", kind = "host", labels = { team = "payments" } }
role = { name = "admin" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "needs_approval"
approvals = "security:1"
policy = "payments-follow-ups"

[[case]]
name = "office-hours: outside the office network"
principal = { user = "dave", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "192.168.1.9" }
expect = "deny"
policy = "office-hours"

[[case]]
name = "office-hours: at the weekend"
principal = { user = "dave", groups = ["devs"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-07T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "deny"
policy = "office-hours"

[[case]]
name = "oncall-break-glass: at night, from home"
principal = { user = "olga", groups = ["oncall"] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-08T03:00:00+01:00[Europe/Berlin]", duration = "20m", source_ip = "192.168.1.9", break_glass = true }
expect = "break_glass"
policy = "oncall-break-glass"

[[case]]
name = "anyone else: the default single approval"
principal = { user = "erin", groups = [] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "needs_approval"
approvals = "1"
policy = "request-with-approval"

[[case]]
name = "a role marked auto-approved stays auto-approved next to the defaults"
principal = { user = "erin", groups = [] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "docker", auto_approve = true }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "auto_approve"
policy = "auto-approved-roles"

[[case]]
name = "no-rm"
principal = { user = "erin", groups = ["sre"] }
action = "exec"
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
command = { path = "/usr/bin/rm", args = "-rf /srv/cache" }
expect = "deny"
policy = "no-rm"

[[case]]
name = "single commands under a grant (default)"
principal = { user = "erin", groups = [] }
action = "exec"
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
command = { path = "/usr/bin/systemctl", args = "restart nginx" }
expect = "allow"

[[case]]
name = "root-shells-for-sre"
principal = { user = "sam", groups = ["sre"] }
action = "exec"
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
command = { path = "/bin/bash", shell = true }
expect = "allow"

[[case]]
name = "no shells for others"
principal = { user = "erin", groups = [] }
action = "exec"
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
command = { path = "/bin/bash", shell = true }
expect = "deny"

[[case]]
name = "vendors-read-only-business-hours: a vendor may not ask for root, even in office hours"
principal = { user = "vendor1", groups = [], external = true, sponsor = "alice" }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "root", run_as = "root" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "deny"
policy = "vendors-read-only-business-hours"

[[case]]
name = "vendors-read-only-business-hours: a read-only role after 18:00 is refused to a vendor"
principal = { user = "vendor1", groups = [], external = true, sponsor = "alice" }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "readonly" }
context = { now = "2026-11-02T18:30:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "deny"
policy = "vendors-read-only-business-hours"

[[case]]
name = "vendors-read-only-business-hours: the same role at 18:30 is fine for a colleague"
principal = { user = "dave", groups = [] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "readonly" }
context = { now = "2026-11-02T18:30:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "needs_approval"

[[case]]
name = "vendors-read-only-business-hours: a vendor's read-only role in business hours"
principal = { user = "vendor1", groups = [], external = true, sponsor = "alice" }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "readonly" }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3" }
expect = "needs_approval"

[[case]]
name = "no-agents-on-prod: an AI agent asks for nothing on production"
principal = { user = "erin", groups = [] }
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "docker", auto_approve = true }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3", via_agent = true }
expect = "deny"
policy = "no-agents-on-prod"

[[case]]
name = "an AI agent asking for an auto-approved role waits for a person (the defaults)"
principal = { user = "erin", groups = [] }
target = { name = "dev1", kind = "host", labels = { env = "dev" } }
role = { name = "docker", auto_approve = true }
context = { now = "2026-11-02T10:00:00+01:00[Europe/Berlin]", duration = "30m", source_ip = "10.1.2.3", via_agent = true }
expect = "needs_approval"
approvals = "1"
policy = "request-with-approval"

[[case]]
name = "docker-delegable"
principal = { user = "erin", groups = [] }
action = "delegate"
target = { name = "web1", kind = "host", labels = { env = "prod" } }
role = { name = "docker", auto_approve = true }
expect = "allow"
"#;

#[tokio::test]
async fn readme_policies_decide_as_documented_next_to_the_defaults() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let defaults = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/src/default_policies.cedar"
    ))
    .unwrap();
    std::fs::write(dir.path().join("00-defaults.cedar"), defaults).unwrap();
    let blocks = readme_cedar_blocks();
    assert!(blocks.len() >= 3, "{blocks:?}");
    for (i, b) in blocks.iter().enumerate() {
        std::fs::write(dir.path().join(format!("readme-{i}.cedar")), b).unwrap();
    }
    let t = &s.admin_token;
    let o = s.cli(t, &["policy", "apply", dir.path().to_str().unwrap()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    // Decided by the set in force on the server.
    let cases = dir.path().join("cases.toml");
    std::fs::write(&cases, CASES).unwrap();
    let o = s.cli(t, &["policy", "test", cases.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "every README example decides as documented:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(!stdout(&o).contains("FAIL"), "{}", stdout(&o));
}
