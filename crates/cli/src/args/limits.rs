//! `--memory-max`, `--pids-max`, `--cpu-max`: a role's resource limits on host sessions.

use clap::Args;
use pedm_api::SessionLimits;
use std::str::FromStr;

/// One limit: a value, or `none` to lift it (`role update`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit<T> {
    Set(T),
    Lift,
}

#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// Memory for everything a grant's sessions run together, such as 512M or 2G (binary
    /// units); beyond it the kernel's OOM killer ends a process. `none` lifts it.
    #[arg(long, value_name = "SIZE|none", value_parser = parse_memory)]
    pub memory_max: Option<Limit<u64>>,
    /// Processes and threads a grant's sessions may have at once (a fork bomb stops
    /// there). `none` lifts it.
    #[arg(long, value_name = "N|none", value_parser = parse_pids)]
    pub pids_max: Option<Limit<u32>>,
    /// CPU for a grant's sessions, in percent of one CPU (50%: half of one, 200%: two).
    /// `none` lifts it.
    #[arg(long, value_name = "PERCENT|none", value_parser = parse_cpu)]
    pub cpu_max: Option<Limit<u32>>,
}

impl LimitArgs {
    pub fn given(&self) -> bool {
        self.memory_max.is_some() || self.pids_max.is_some() || self.cpu_max.is_some()
    }

    /// `base` with the limits given here set or lifted.
    pub fn apply(&self, base: SessionLimits) -> SessionLimits {
        fn merge<T: Copy>(old: Option<T>, new: Option<Limit<T>>) -> Option<T> {
            match new {
                None => old,
                Some(Limit::Set(v)) => Some(v),
                Some(Limit::Lift) => None,
            }
        }
        SessionLimits {
            memory_bytes: merge(base.memory_bytes, self.memory_max),
            pids: merge(base.pids, self.pids_max),
            cpu_percent: merge(base.cpu_percent, self.cpu_max),
        }
    }
}

fn lift_or<T>(s: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<Limit<T>, String> {
    if s.eq_ignore_ascii_case("none") {
        Ok(Limit::Lift)
    } else {
        parse(s).map(Limit::Set)
    }
}

fn parse_memory(s: &str) -> Result<Limit<u64>, String> {
    lift_or(s, |s| {
        let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
        let shift = match unit.to_ascii_uppercase().as_str() {
            "" | "B" => 0,
            "K" | "KIB" => 10,
            "M" | "MIB" => 20,
            "G" | "GIB" => 30,
            "T" | "TIB" => 40,
            _ => {
                return Err(format!(
                    "{s:?} is not a size such as 512M or 2G (units K, M, G, T)"
                ));
            }
        };
        let n =
            u64::from_str(digits).map_err(|_| format!("{s:?} is not a size such as 512M or 2G"))?;
        n.checked_mul(1 << shift)
            .filter(|b| {
                (SessionLimits::MIN_MEMORY_BYTES..=SessionLimits::MAX_MEMORY_BYTES).contains(b)
            })
            .ok_or_else(|| format!("{s:?} is outside 4M..1024T"))
    })
}

fn parse_pids(s: &str) -> Result<Limit<u32>, String> {
    lift_or(s, |s| {
        u32::from_str(s)
            .ok()
            .filter(|n| (1..=SessionLimits::MAX_PIDS).contains(n))
            .ok_or_else(|| format!("{s:?} is not a count from 1 to {}", SessionLimits::MAX_PIDS))
    })
}

fn parse_cpu(s: &str) -> Result<Limit<u32>, String> {
    lift_or(s, |s| {
        u32::from_str(s.strip_suffix('%').unwrap_or(s))
            .ok()
            .filter(|n| (1..=SessionLimits::MAX_CPU_PERCENT).contains(n))
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a percentage of one CPU from 1% to {}%",
                    SessionLimits::MAX_CPU_PERCENT
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_percentages_and_none() {
        assert_eq!(parse_memory("512M"), Ok(Limit::Set(512 << 20)));
        assert_eq!(parse_memory("2g"), Ok(Limit::Set(2 << 30)));
        assert_eq!(parse_memory("none"), Ok(Limit::Lift));
        assert!(parse_memory("1M").unwrap_err().contains("outside"));
        assert!(parse_memory("12 M").is_err());
        assert!(parse_memory("-5M").is_err());
        assert_eq!(parse_cpu("50%"), Ok(Limit::Set(50)));
        assert_eq!(parse_cpu("200"), Ok(Limit::Set(200)));
        assert!(parse_cpu("0%").is_err());
        assert_eq!(parse_pids("64"), Ok(Limit::Set(64)));
        assert!(parse_pids("0").is_err());
        let args = LimitArgs {
            memory_max: Some(Limit::Lift),
            pids_max: Some(Limit::Set(10)),
            cpu_max: None,
        };
        let base = SessionLimits {
            memory_bytes: Some(1 << 30),
            pids: None,
            cpu_percent: Some(50),
        };
        assert_eq!(
            args.apply(base),
            SessionLimits {
                memory_bytes: None,
                pids: Some(10),
                cpu_percent: Some(50)
            }
        );
    }
}
