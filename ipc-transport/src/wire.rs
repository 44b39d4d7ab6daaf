//! What travels on a link: the handshake messages and the frames.
//!
//! Each message on a link's pipe carries one or more frames, each written with
//! [`codec::put_frame`]'s length prefix and encoded with bincode 2, so that
//! many requests, replies and pushes share one message.

use ipc_channel::ipc::{IpcBytesSender, IpcSender};

use crate::link::ipc::Receiver;
use serde::{Deserialize, Serialize};
use yuki_channel::codec;

use crate::error::{Error, Result};

/// The first message a child sends to the one-shot server of its parent.
#[derive(Serialize, Deserialize)]
pub(crate) enum Hello {
    /// A child presenting its token and its half of the link. (The
    /// link's memory is main's, inherited at spawn: see [`Bootstrap`].)
    Join {
        token: String,
        pid: u32,
        /// Never written to: main keeps it, and the child sees main go
        /// when its end fails. (Main sees a child go from its exit.)
        down: IpcBytesSender,
        /// Main answers the handshake here.
        welcome: IpcSender<Welcome>,
    },
    /// A child joining over an ipc-channel link, which main chose for it
    /// (the bootstrap value names no memory file).
    JoinOverIpc {
        token: String,
        pid: u32,
        /// Main's messages to the child; its closing tells the child main
        /// is gone.
        down: IpcBytesSender,
        /// The child's messages to main; its closing tells main the child
        /// is gone.
        up: Receiver,
        welcome: IpcSender<Welcome>,
    },
}

impl Hello {
    /// Who the hello says it is, and where main answers.
    pub(crate) fn credentials(&self) -> (&str, u32, &IpcSender<Welcome>) {
        match self {
            Hello::Join {
                token,
                pid,
                welcome,
                ..
            }
            | Hello::JoinOverIpc {
                token,
                pid,
                welcome,
                ..
            } => (token, *pid, welcome),
        }
    }
}

/// Main's answer to [`Hello::Join`].
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Welcome {
    Accepted {
        peer: u64,
        name: String,
        max_frame: u64,
    },
    Refused(String),
}

/// Asks for a change in a child's life.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Child to main: stop me.
    Stop,
    /// Child to main: restart me.
    Restart,
    /// Main to child: exit now.
    Shutdown,
}

/// Why main could not answer a call.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Failure<'a> {
    NoService(&'a str),
    Other(&'a str),
    /// The reply would exceed the maximum frame.
    TooLarge {
        size: u64,
        max: u64,
    },
}

/// One frame on a link.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Frame<'a> {
    /// Child to main: a call to a service.
    Call {
        id: u64,
        service: &'a str,
        #[serde(borrow, with = "serde_bytes")]
        body: &'a [u8],
    },
    /// Main to child: the answer to call `id`.
    Reply {
        id: u64,
        #[serde(borrow, with = "serde_bytes")]
        body: &'a [u8],
    },
    /// Main to child: call `id` failed.
    Failed {
        id: u64,
        #[serde(borrow)]
        failure: Failure<'a>,
    },
    /// Main to child: a frame on a stream.
    Push {
        stream: &'a str,
        #[serde(borrow, with = "serde_bytes")]
        body: &'a [u8],
    },
    /// Either way: a lifecycle request.
    Control(Control),
}

/// Appends `frame` to `out` as one length-prefixed frame, encoding it in
/// place (no intermediate buffer).
pub(crate) fn put(out: &mut Vec<u8>, frame: &Frame<'_>) -> yuki_channel::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = codec::encode_into(frame, out) {
        out.truncate(start);
        return Err(e);
    }
    let size = out.len() - start - 4;
    let Ok(len) = u32::try_from(size) else {
        out.truncate(start);
        return Err(yuki_channel::Error::FrameTooLarge {
            size,
            max: u32::MAX as usize,
        });
    };
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// The codec's variant index of `Frame::Push`, as a one-byte varint.
const PUSH: u8 = 3;

/// Appends a [`Frame::Push`] like [`put`] does, byte for byte, writing the
/// codec's layout directly: main writes one per child per message, so the
/// general encoder's cost counts.
pub(crate) fn put_push(out: &mut Vec<u8>, stream: &str, body: &[u8]) -> yuki_channel::Result<()> {
    let size = 1 + codec::raw::bytes_len(stream.len()) + codec::raw::bytes_len(body.len());
    let Ok(len) = u32::try_from(size) else {
        return Err(yuki_channel::Error::FrameTooLarge {
            size,
            max: u32::MAX as usize,
        });
    };
    out.reserve(4 + size);
    out.extend_from_slice(&len.to_le_bytes());
    out.push(PUSH);
    codec::raw::put_bytes(out, stream.as_bytes());
    codec::raw::put_bytes(out, body);
    Ok(())
}

/// The stream of a frame [`put_push`] wrote (without its length prefix),
/// or `None` for any other frame.
pub(crate) fn push_stream(frame: &[u8]) -> Option<&str> {
    let (&PUSH, rest) = frame.split_first()? else {
        return None;
    };
    let (stream, _) = codec::raw::split_bytes(rest)?;
    std::str::from_utf8(stream).ok()
}

/// Decodes one frame, refusing frames over `max` (plus room for the header).
pub(crate) fn parse(bytes: &[u8], max: usize) -> yuki_channel::Result<Frame<'_>> {
    codec::check_frame(bytes.len(), max.saturating_add(HEADER_ROOM))?;
    // A push (most of what a busy child receives) is read directly, as
    // `put_push` writes it; anything else, or malformed, by the codec.
    if let Some((&PUSH, rest)) = bytes.split_first() {
        if let Some((stream, rest)) = codec::raw::split_bytes(rest) {
            if let (Ok(stream), Some((body, []))) =
                (std::str::from_utf8(stream), codec::raw::split_bytes(rest))
            {
                return Ok(Frame::Push { stream, body });
            }
        }
    }
    codec::decode_borrowed(bytes)
}

/// Room for a frame's header (ids, names) beside a body of the maximum size.
pub(crate) const HEADER_ROOM: usize = 4096;

/// The bootstrap value: `2 <token> <link> <server name>`, where `<link>`
/// is the descriptor of the link's memory file, or `ipc` for a link over
/// ipc-channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bootstrap {
    pub(crate) token: String,
    /// The descriptor at which the child inherits its link's memory file,
    /// made and sealed by main (a child never hands main memory to map);
    /// `None` for a link over ipc-channel.
    pub(crate) region: Option<i32>,
    pub(crate) server: String,
}

const VERSION: &str = "2";
/// In place of a descriptor: the link goes over ipc-channel.
const IPC_LINK: &str = "ipc";
const TOKEN_BYTES: usize = 16;

impl Bootstrap {
    /// A fresh value for a child, with a random token of 128 bits.
    pub(crate) fn new(server: String, region: Option<i32>) -> Result<Bootstrap> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| Error::os("drawing a random token", e))?;
        let token = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Bootstrap {
            token,
            region,
            server,
        })
    }

    pub(crate) fn encode(&self) -> String {
        let link = match self.region {
            Some(fd) => fd.to_string(),
            None => IPC_LINK.to_owned(),
        };
        format!("{VERSION} {} {link} {}", self.token, self.server)
    }

    pub(crate) fn parse(value: &str) -> Result<Bootstrap> {
        let bad = |why: &str| Error::MalformedBootstrap(why.to_owned());
        let mut parts = value.splitn(4, ' ');
        let version = parts.next().unwrap_or_default();
        if version != VERSION {
            return Err(bad("unknown version"));
        }
        let token = parts.next().ok_or_else(|| bad("no token"))?;
        if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the token is not 32 hex digits"));
        }
        let region = match parts.next() {
            Some(IPC_LINK) => None,
            other => Some(
                other
                    .and_then(|r| r.parse::<i32>().ok())
                    .filter(|r| *r > 2)
                    .ok_or_else(|| bad("no descriptor for the link's memory"))?,
            ),
        };
        let server = parts
            .next()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("no server name"))?;
        Ok(Bootstrap {
            token: token.to_owned(),
            region,
            server: server.to_owned(),
        })
    }
}

/// Compares tokens in time independent of where they differ.
pub(crate) fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_round_trips_and_rejects_garbage() {
        let b = Bootstrap::new("/tmp/x y/socket".into(), Some(7)).unwrap();
        assert_eq!(b.token.len(), 32);
        assert_eq!(Bootstrap::parse(&b.encode()).unwrap(), b);
        let over_ipc = Bootstrap::new("/tmp/x y/socket".into(), None).unwrap();
        assert!(
            over_ipc.encode().contains(" ipc /tmp"),
            "{}",
            over_ipc.encode()
        );
        assert_eq!(Bootstrap::parse(&over_ipc.encode()).unwrap(), over_ipc);
        for bad in [
            "",
            "2 00 /s",
            "1",
            "1 abc /s",
            "2 zz000000000000000000000000000000 3 /s",
            "1 00000000000000000000000000000000 /s",
            "2 00000000000000000000000000000000 /s",
            "2 00000000000000000000000000000000 1 /s",
            "2 00000000000000000000000000000000 IPC /s",
            "2 00000000000000000000000000000000 ipc",
        ] {
            assert!(
                matches!(Bootstrap::parse(bad), Err(Error::MalformedBootstrap(_))),
                "{bad:?}"
            );
        }
        let no_server = format!("2 {} 7 ", b.token);
        assert!(Bootstrap::parse(&no_server).is_err());
        assert_ne!(Bootstrap::new("s".into(), Some(7)).unwrap().token, b.token);
    }

    #[test]
    fn frames_round_trip_in_one_buffer() {
        let mut buf = Vec::new();
        put(
            &mut buf,
            &Frame::Call {
                id: 7,
                service: "svc",
                body: b"abc",
            },
        )
        .unwrap();
        put(&mut buf, &Frame::Control(Control::Stop)).unwrap();
        let frames: Vec<_> = codec::Frames::new(&buf).map(|f| f.unwrap()).collect();
        assert_eq!(frames.len(), 2);
        match parse(frames[0], 16).unwrap() {
            Frame::Call { id, service, body } => {
                assert_eq!((id, service, body), (7, "svc", &b"abc"[..]))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(frames[1], 16).unwrap(),
            Frame::Control(Control::Stop)
        ));
        assert!(parse(&[0xff, 0xff], 16).is_err());
        assert!(matches!(
            parse(&vec![0; 16 + HEADER_ROOM + 1], 16),
            Err(yuki_channel::Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn pushes_are_written_as_the_codec_writes_them() {
        for (stream, body_len) in [("", 0), ("s", 250), ("yuki.pubsub", 251), ("x", 65_536)] {
            let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
            let (mut quick, mut general) = (vec![9], vec![9]);
            put_push(&mut quick, stream, &body).unwrap();
            put(
                &mut general,
                &Frame::Push {
                    stream,
                    body: &body,
                },
            )
            .unwrap();
            assert_eq!(quick, general, "{stream:?} {body_len}");
        }
        let long = "s".repeat(300);
        let (mut quick, mut general) = (Vec::new(), Vec::new());
        put_push(&mut quick, &long, b"b").unwrap();
        put(
            &mut general,
            &Frame::Push {
                stream: &long,
                body: b"b",
            },
        )
        .unwrap();
        assert_eq!(quick, general);
    }

    #[test]
    fn pushes_are_read_as_the_codec_reads_them() {
        for (stream, body_len) in [("", 0), ("yuki.pubsub", 251), ("x", 65_536)] {
            let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
            let mut buf = Vec::new();
            put_push(&mut buf, stream, &body).unwrap();
            let frame = &buf[4..];
            match parse(frame, 1 << 20).unwrap() {
                Frame::Push { stream: s, body: b } => assert_eq!((s, b), (stream, &body[..])),
                other => panic!("{other:?}"),
            }
            // Cut short or with bytes after it, it is an error, as for the codec.
            assert!(parse(&frame[..frame.len() - 1], 1 << 20).is_err());
            let mut longer = frame.to_vec();
            longer.push(0);
            assert!(parse(&longer, 1 << 20).is_err());
        }
        // A stream name that is not text is refused, as by the codec.
        assert!(parse(&[PUSH, 1, 0xff, 0], 16).is_err());
        // Other frames still parse.
        let mut buf = Vec::new();
        put(&mut buf, &Frame::Reply { id: 9, body: b"r" }).unwrap();
        assert!(matches!(
            parse(&buf[4..], 16).unwrap(),
            Frame::Reply { id: 9, body: b"r" }
        ));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(same_token("abcd", "abcd"));
        assert!(!same_token("abcd", "abce"));
        assert!(!same_token("abc", "abcd"));
    }
}
