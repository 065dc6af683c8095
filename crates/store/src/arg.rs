//! A bound parameter of either dialect, and `args![…]` to build a list of them.

/// A bound parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
    Blob(Vec<u8>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&Option<String>> for Arg {
    fn from(v: &Option<String>) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Blob(v.to_vec())
    }
}
/// Timestamps are stored as microseconds since the epoch.
impl From<jiff::Timestamp> for Arg {
    fn from(v: jiff::Timestamp) -> Self {
        Arg::Int(Some(v.as_microsecond()))
    }
}
impl From<Option<jiff::Timestamp>> for Arg {
    fn from(v: Option<jiff::Timestamp>) -> Self {
        Arg::Int(v.map(|t| t.as_microsecond()))
    }
}
/// UUIDs are stored as hyphenated text.
impl From<uuid::Uuid> for Arg {
    fn from(v: uuid::Uuid) -> Self {
        Arg::Text(Some(v.to_string()))
    }
}
impl From<Option<uuid::Uuid>> for Arg {
    fn from(v: Option<uuid::Uuid>) -> Self {
        Arg::Text(v.map(|u| u.to_string()))
    }
}

/// `args![a, b, c]`: a `Vec<Arg>` for `$1, $2, $3`.
macro_rules! args {
    ($($v:expr),* $(,)?) => { vec![$($crate::arg::Arg::from($v)),*] };
}
pub(crate) use args;
