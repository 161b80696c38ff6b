//! `GET /kv?start=&end=&limit=`: the pairs of a key range as JSON; `DELETE /kv?start=&end=`:
//! every key of the range deleted.
//!
//! ```text
//! GET /kv?start=a&end=m&limit=100[&reverse=true][&keys_only=true][&encoding=utf8|hex|base64][&cf=CF]
//! 200 {"kvs":[{"key":"a","value":"1"},...],"truncated":false}
//! DELETE /kv?start=a&end=m[&encoding=..][&cf=CF]    204
//! ```
//! A `DELETE /kv` must name `start` or `end`: deleting every key takes `start=` and `end=`
//! given empty on purpose (`DELETE /kv?start=&end=`).
//! `start` (inclusive) and `end` (exclusive; empty: to the last key) and every key and value in
//! the answer are written in `encoding`: `utf8` (the default; a key or value that is not UTF-8
//! is a 422 naming the other encodings), `hex` or `base64` (standard alphabet, padded).
//! `limit` defaults to 100 and is capped at the server's scan limit (10,000 by default);
//! `truncated` says the answer stopped at the server's byte bound short of `limit` (ask again
//! from past the last key). `keys_only` leaves the values out.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kv::ScanRange;
use serde::{Deserialize, Serialize};

use super::backend::Backend;

/// The pairs asked for when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

/// The query of `GET /kv`.
#[derive(Deserialize, Default)]
pub struct RangeQuery {
    #[serde(default)]
    cf: String,
    #[serde(default)]
    start: String,
    #[serde(default)]
    end: String,
    limit: Option<u32>,
    #[serde(default)]
    reverse: bool,
    #[serde(default)]
    keys_only: bool,
    #[serde(default)]
    encoding: String,
}

#[derive(Serialize)]
struct Pair {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

#[derive(Serialize)]
struct Answer {
    kvs: Vec<Pair>,
    truncated: bool,
}

/// How keys and values are written in the query and the answer.
#[derive(Clone, Copy)]
pub(super) enum Encoding {
    Utf8,
    Hex,
    Base64,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Encoding {
    pub(super) fn parse(name: &str) -> Result<Encoding, String> {
        match name {
            "" | "utf8" => Ok(Encoding::Utf8),
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            other => Err(format!(
                "unknown encoding {other:?}: expected utf8, hex or base64"
            )),
        }
    }

    pub(super) fn decode(self, s: &str) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Utf8 => Ok(s.as_bytes().to_vec()),
            Encoding::Hex => {
                let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                let b = s.as_bytes();
                if b.len() % 2 != 0 {
                    return Err(format!("{s:?} is not hex"));
                }
                b.chunks(2)
                    .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| format!("{s:?} is not hex"))
            }
            Encoding::Base64 => {
                let bad = || format!("{s:?} is not base64");
                let b = s.as_bytes();
                if b.len() % 4 != 0 {
                    return Err(bad());
                }
                let mut out = Vec::with_capacity(b.len() / 4 * 3);
                for (i, quad) in b.chunks(4).enumerate() {
                    let last = i + 1 == b.len() / 4;
                    let pad = quad.iter().rev().take_while(|c| **c == b'=').count();
                    if pad > 2 || (pad > 0 && !last) {
                        return Err(bad());
                    }
                    let mut n = 0u32;
                    for c in &quad[..4 - pad] {
                        let v = B64.iter().position(|x| x == c).ok_or_else(bad)?;
                        n = n << 6 | v as u32;
                    }
                    n <<= 6 * pad as u32;
                    out.extend_from_slice(&n.to_be_bytes()[1..4 - pad]);
                }
                Ok(out)
            }
        }
    }

    fn encode(self, b: &[u8]) -> Result<String, String> {
        match self {
            Encoding::Utf8 => String::from_utf8(b.to_vec()).map_err(|_| {
                "a key or value is not UTF-8: ask with encoding=hex or encoding=base64".into()
            }),
            Encoding::Hex => Ok(b.iter().map(|x| format!("{x:02x}")).collect()),
            Encoding::Base64 => {
                let mut s = String::with_capacity(b.len().div_ceil(3) * 4);
                for chunk in b.chunks(3) {
                    let mut n = [0u8; 4];
                    n[1..1 + chunk.len()].copy_from_slice(chunk);
                    let n = u32::from_be_bytes(n);
                    for i in 0..4 {
                        if i <= chunk.len() {
                            s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                        } else {
                            s.push('=');
                        }
                    }
                }
                Ok(s)
            }
        }
    }
}

fn unprocessable(reason: String) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, format!("{reason}\n")).into_response()
}

pub(super) fn bad_request(reason: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

/// The range the query asks for, in `encoding`, with its limit capped at `max_limit`; or why
/// the query is bad.
fn parse(q: &RangeQuery, max_limit: u32) -> Result<(Encoding, ScanRange), String> {
    let encoding = Encoding::parse(&q.encoding)?;
    let range = ScanRange {
        start: encoding.decode(&q.start)?,
        end: encoding.decode(&q.end)?,
        limit: q.limit.unwrap_or(DEFAULT_LIMIT).min(max_limit.max(1)),
        reverse: q.reverse,
        key_only: q.keys_only,
        with_expiry: false,
    };
    Ok((encoding, range))
}

/// The JSON answer for `pairs`.
pub(super) fn answer(
    encoding: Encoding,
    keys_only: bool,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    truncated: bool,
) -> Response {
    let kvs = pairs
        .iter()
        .map(|(k, v)| {
            Ok(Pair {
                key: encoding.encode(k)?,
                value: if keys_only {
                    None
                } else {
                    Some(encoding.encode(v)?)
                },
            })
        })
        .collect::<Result<Vec<Pair>, String>>();
    match kvs {
        Ok(kvs) => match serde_json::to_string(&Answer { kvs, truncated }) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
        Err(reason) => unprocessable(reason),
    }
}

/// The range a `DELETE /kv` names; a bare `DELETE /kv` (neither `start=` nor `end=` in the
/// `query`) is refused, so a typo cannot delete everything.
fn range_to_delete(query: Option<&str>, q: &RangeQuery) -> Result<ScanRange, String> {
    let named = query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.starts_with("start=") || p.starts_with("end="))
    });
    if !named {
        return Err("DELETE /kv needs start= and end= (empty for unbounded)".into());
    }
    parse(q, u32::MAX).map(|(_, range)| range)
}

/// `DELETE /kv?start=&end=`: one write on a standalone store, one per region through a raft
/// store.
pub(super) async fn delete<B: Backend>(
    State(b): State<Arc<B>>,
    uri: axum::http::Uri,
    Query(q): Query<RangeQuery>,
) -> Response {
    let range = match range_to_delete(uri.query(), &q) {
        Ok(r) => r,
        Err(reason) => return bad_request(reason),
    };
    match b.delete_range(q.cf, range.start, range.end).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(r) => r,
    }
}

/// `GET /kv`: one page of the range on a standalone store; the range across regions, up to the
/// limit, through a raft store.
pub(super) async fn scan<B: Backend>(
    State(b): State<Arc<B>>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let (encoding, range) = match parse(&q, b.max_scan_limit()) {
        Ok(p) => p,
        Err(reason) => return bad_request(reason),
    };
    let keys_only = range.key_only;
    match b.scan(q.cf, range).await {
        Ok((pairs, truncated)) => answer(encoding, keys_only, pairs, truncated),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64_round_trip_1() {
        let samples: [&[u8]; 6] = [b"", b"f", b"fo", b"foo", b"foob", b"\x00\xff\x10binary"];
        for b in samples {
            for e in [Encoding::Hex, Encoding::Base64] {
                let s = e.encode(b).unwrap();
                assert_eq!(e.decode(&s).unwrap(), b, "{s}");
            }
        }
        assert_eq!(Encoding::Base64.encode(b"foob").unwrap(), "Zm9vYg==");
        assert_eq!(Encoding::Base64.encode(b"foo").unwrap(), "Zm9v");
        assert_eq!(Encoding::Hex.encode(b"\x00\xab").unwrap(), "00ab");
        for bad in ["Zm9", "Zm=v", "Z!9v", "=m9v"] {
            assert!(Encoding::Base64.decode(bad).is_err(), "{bad}");
        }
        for bad in ["0", "0g", "zz"] {
            assert!(Encoding::Hex.decode(bad).is_err(), "{bad}");
        }
        assert!(Encoding::Utf8.encode(b"\xff").is_err());
    }
}
