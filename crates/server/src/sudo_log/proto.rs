//! The messages of sudo's log server protocol, as `sudo_logsrv.proto(5)` (sudo 1.9) defines
//! them, for `prost`. Written out here rather than generated: the file is small, stable
//! (new fields are only ever added), and generating it would need `protoc` at build time.
//! Field numbers and types are the protocol's; do not renumber.

#![allow(clippy::derive_partial_eq_without_eq)]

/// `struct timespec`: an elapsed time (delays, commit points) or a wall-clock time.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct TimeSpec {
    #[prost(int64, tag = "1")]
    pub tv_sec: i64,
    #[prost(int32, tag = "2")]
    pub tv_nsec: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IoBuffer {
    #[prost(message, optional, tag = "1")]
    pub delay: Option<TimeSpec>,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringList {
    #[prost(string, repeated, tag = "1")]
    pub strings: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NumberList {
    #[prost(int64, repeated, tag = "1")]
    pub numbers: Vec<i64>,
}

/// One key of the event log (`submituser`, `command`, `runargv`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct InfoMessage {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(oneof = "InfoValue", tags = "2, 3, 4, 5")]
    pub value: Option<InfoValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum InfoValue {
    #[prost(int64, tag = "2")]
    Numval(i64),
    #[prost(string, tag = "3")]
    Strval(String),
    #[prost(message, tag = "4")]
    Strlistval(StringList),
    #[prost(message, tag = "5")]
    Numlistval(NumberList),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AcceptMessage {
    #[prost(message, optional, tag = "1")]
    pub submit_time: Option<TimeSpec>,
    #[prost(message, repeated, tag = "2")]
    pub info_msgs: Vec<InfoMessage>,
    #[prost(bool, tag = "3")]
    pub expect_iobufs: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RejectMessage {
    #[prost(message, optional, tag = "1")]
    pub submit_time: Option<TimeSpec>,
    #[prost(string, tag = "2")]
    pub reason: String,
    #[prost(message, repeated, tag = "3")]
    pub info_msgs: Vec<InfoMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExitMessage {
    #[prost(message, optional, tag = "1")]
    pub run_time: Option<TimeSpec>,
    #[prost(int32, tag = "2")]
    pub exit_value: i32,
    #[prost(bool, tag = "3")]
    pub dumped_core: bool,
    #[prost(string, tag = "4")]
    pub signal: String,
    #[prost(string, tag = "5")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AlertMessage {
    #[prost(message, optional, tag = "1")]
    pub alert_time: Option<TimeSpec>,
    #[prost(string, tag = "2")]
    pub reason: String,
    #[prost(message, repeated, tag = "3")]
    pub info_msgs: Vec<InfoMessage>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RestartMessage {
    #[prost(string, tag = "1")]
    pub log_id: String,
    #[prost(message, optional, tag = "2")]
    pub resume_point: Option<TimeSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChangeWindowSize {
    #[prost(message, optional, tag = "1")]
    pub delay: Option<TimeSpec>,
    #[prost(int32, tag = "2")]
    pub rows: i32,
    #[prost(int32, tag = "3")]
    pub cols: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CommandSuspend {
    #[prost(message, optional, tag = "1")]
    pub delay: Option<TimeSpec>,
    #[prost(string, tag = "2")]
    pub signal: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientHello {
    #[prost(string, tag = "1")]
    pub client_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ClientMessage {
    #[prost(oneof = "Client", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13")]
    pub r#type: Option<Client>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Client {
    #[prost(message, tag = "1")]
    AcceptMsg(AcceptMessage),
    #[prost(message, tag = "2")]
    RejectMsg(RejectMessage),
    #[prost(message, tag = "3")]
    ExitMsg(ExitMessage),
    #[prost(message, tag = "4")]
    RestartMsg(RestartMessage),
    #[prost(message, tag = "5")]
    AlertMsg(AlertMessage),
    #[prost(message, tag = "6")]
    TtyinBuf(IoBuffer),
    #[prost(message, tag = "7")]
    TtyoutBuf(IoBuffer),
    #[prost(message, tag = "8")]
    StdinBuf(IoBuffer),
    #[prost(message, tag = "9")]
    StdoutBuf(IoBuffer),
    #[prost(message, tag = "10")]
    StderrBuf(IoBuffer),
    #[prost(message, tag = "11")]
    WinsizeEvent(ChangeWindowSize),
    #[prost(message, tag = "12")]
    SuspendEvent(CommandSuspend),
    #[prost(message, tag = "13")]
    HelloMsg(ClientHello),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerHello {
    #[prost(string, tag = "1")]
    pub server_id: String,
    #[prost(string, tag = "2")]
    pub redirect: String,
    #[prost(string, repeated, tag = "3")]
    pub servers: Vec<String>,
    #[prost(bool, tag = "4")]
    pub subcommands: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerMessage {
    #[prost(oneof = "Server", tags = "1, 2, 3, 4, 5")]
    pub r#type: Option<Server>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Server {
    #[prost(message, tag = "1")]
    Hello(ServerHello),
    #[prost(message, tag = "2")]
    CommitPoint(TimeSpec),
    #[prost(string, tag = "3")]
    LogId(String),
    #[prost(string, tag = "4")]
    Error(String),
    #[prost(string, tag = "5")]
    Abort(String),
}

impl TimeSpec {
    /// An elapsed time; `None` for a negative or malformed one.
    pub fn duration(&self) -> Option<std::time::Duration> {
        let secs = u64::try_from(self.tv_sec).ok()?;
        let nanos = u32::try_from(self.tv_nsec)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        Some(std::time::Duration::new(secs, nanos))
    }

    pub fn from_duration(d: std::time::Duration) -> TimeSpec {
        TimeSpec {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            // Below 10^9, so it fits.
            tv_nsec: d.subsec_nanos() as i32,
        }
    }

    /// A wall-clock time.
    pub fn timestamp(&self) -> Option<jiff::Timestamp> {
        jiff::Timestamp::new(self.tv_sec, self.tv_nsec).ok()
    }
}
