//! What request and response heads share: the owned copy of a head's bytes with its
//! header index (`Fields`), header classification, Content-Length / Transfer-Encoding
//! validation common to both directions, and the httparse plumbing (header slots, size
//! window).
//!
//! Event-loop thread, pure. A complete head is copied once into an owned value whose
//! accessors borrow from the copy; positions are kept as `u32` spans, so the header index
//! is one small `Vec`. Request specifics are in `request.rs`, response specifics in
//! `response.rs`, serialization for forwarding in `forward.rs`.

use std::mem::MaybeUninit;

use super::{is_tchar, list_items, trim_ows, HeadError, Limits};

/// Header slots kept on the stack; `Limits::max_headers` above this uses a heap array.
const STACK_HEADERS: usize = 100;

/// Byte range into a head's own copy of its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Where `part` sits inside `base`; empty if it is not inside (httparse hands back a
    /// static "" for a reason phrase with obs-text, for example).
    pub(super) fn of(base: &[u8], part: &[u8]) -> Span {
        let base_start = base.as_ptr() as usize;
        let start = (part.as_ptr() as usize).wrapping_sub(base_start);
        match start.checked_add(part.len()) {
            Some(end) if start <= base.len() && end <= base.len() => Span {
                start: start as u32,
                end: end as u32,
            },
            _ => Span::default(),
        }
    }

    /// The sub-range `from..to` of this span (offsets relative to its start).
    pub(super) fn sub(self, from: usize, to: usize) -> Span {
        let len = (self.end - self.start) as usize;
        let (from, to) = (from.min(len) as u32, to.min(len) as u32);
        Span {
            start: self.start + from,
            end: self.start + to.max(from),
        }
    }

    pub(super) fn get(self, raw: &[u8]) -> &[u8] {
        raw.get(self.start as usize..self.end as usize)
            .unwrap_or(&[])
    }
}

/// Headers the proxy looks at or strips; everything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Other,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    DstOverride,
}

impl Kind {
    #[inline]
    pub(super) fn of(name: &str) -> Kind {
        const KNOWN: [(&str, Kind); 11] = [
            ("host", Kind::Host),
            ("content-length", Kind::ContentLength),
            ("transfer-encoding", Kind::TransferEncoding),
            ("connection", Kind::Connection),
            ("keep-alive", Kind::KeepAlive),
            ("proxy-connection", Kind::ProxyConnection),
            ("te", Kind::Te),
            ("trailer", Kind::Trailer),
            ("upgrade", Kind::Upgrade),
            ("expect", Kind::Expect),
            ("l5d-dst-override", Kind::DstOverride),
        ];
        KNOWN
            .iter()
            .find(|(known, _)| known.len() == name.len() && known.eq_ignore_ascii_case(name))
            .map_or(Kind::Other, |(_, kind)| *kind)
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct HeaderEntry {
    pub(super) name: Span,
    pub(super) value: Span,
    pub(super) kind: Kind,
}

/// The owned bytes of a head plus its header index; shared by requests and responses.
#[derive(Clone, Debug)]
pub(super) struct Fields {
    pub(super) raw: Box<[u8]>,
    pub(super) headers: Vec<HeaderEntry>,
    /// The options of all `Connection` headers, read once.
    pub(super) connection: ConnectionOptions,
}

impl Fields {
    pub(super) fn new(buf: &[u8], consumed: usize, parsed: &[httparse::Header<'_>]) -> Fields {
        let raw: Box<[u8]> = buf.get(..consumed).unwrap_or(buf).into();
        let headers: Vec<HeaderEntry> = parsed
            .iter()
            .map(|h| HeaderEntry {
                name: Span::of(buf, h.name.as_bytes()),
                value: Span::of(buf, h.value),
                kind: Kind::of(h.name),
            })
            .collect();
        let mut fields = Fields {
            raw,
            headers,
            connection: ConnectionOptions::default(),
        };
        fields.connection = fields.read_connection_options();
        fields
    }

    pub(super) fn str_of(&self, span: Span) -> &str {
        std::str::from_utf8(span.get(&self.raw)).unwrap_or("")
    }

    pub(super) fn bytes_of(&self, span: Span) -> &[u8] {
        span.get(&self.raw)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.headers
            .iter()
            .map(|h| (self.str_of(h.name), self.bytes_of(h.value)))
    }

    pub(super) fn first(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    pub(super) fn values(&self, kind: Kind) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers
            .iter()
            .filter(move |h| h.kind == kind)
            .map(|h| self.bytes_of(h.value))
    }

    /// Whether a `Connection` header lists `name` (those headers are hop-by-hop too).
    pub(super) fn named_by_connection(&self, name: &[u8]) -> bool {
        self.connection.names_others
            && self
                .values(Kind::Connection)
                .flat_map(list_items)
                .any(|opt| opt.eq_ignore_ascii_case(name))
    }

    fn read_connection_options(&self) -> ConnectionOptions {
        let mut opts = ConnectionOptions::default();
        for opt in self.values(Kind::Connection).flat_map(list_items) {
            if opt.eq_ignore_ascii_case(b"close") {
                opts.close = true;
            } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                opts.keep_alive = true;
            } else if opt.eq_ignore_ascii_case(b"upgrade") {
                opts.upgrade = true;
            } else {
                opts.names_others = true;
            }
        }
        opts
    }

    /// Content-Length and Transfer-Encoding, validated as far as requests and responses
    /// agree (RFC 9112 sections 6.1-6.3).
    pub(super) fn framing_headers(&self) -> Result<FramingHeaders, HeadError> {
        let mut content_length = None;
        for value in self.values(Kind::ContentLength) {
            content_length = Some(parse_content_length(content_length, value)?);
        }
        let mut te: Option<TransferCodings> = None;
        for value in self.values(Kind::TransferEncoding) {
            let codings = te.get_or_insert_with(TransferCodings::default);
            for item in list_items(value) {
                let name = trim_ows(item.split(|b| *b == b';').next().unwrap_or(&[]));
                if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                    return Err(HeadError::Invalid("invalid transfer-encoding"));
                }
                codings.count += 1;
                if name.eq_ignore_ascii_case(b"chunked") {
                    codings.chunked += 1;
                    codings.final_chunked = true;
                } else {
                    codings.other = true;
                    codings.final_chunked = false;
                }
            }
        }
        if let Some(codings) = &te {
            if codings.count == 0 {
                return Err(HeadError::Invalid("empty transfer-encoding"));
            }
            if content_length.is_some() {
                return Err(HeadError::Invalid("content-length with transfer-encoding"));
            }
            if codings.chunked > 1 {
                return Err(HeadError::Invalid("chunked applied more than once"));
            }
        }
        Ok(FramingHeaders { content_length, te })
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ConnectionOptions {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
    /// Lists some other header, which must then be stripped when forwarding (the three
    /// above are hop-by-hop headers anyway). Usually false, which keeps forwarding cheap.
    pub(super) names_others: bool,
}

#[derive(Default)]
pub(super) struct TransferCodings {
    pub(super) count: u32,
    pub(super) chunked: u32,
    pub(super) final_chunked: bool,
    pub(super) other: bool,
}

pub(super) struct FramingHeaders {
    pub(super) content_length: Option<u64>,
    pub(super) te: Option<TransferCodings>,
}

/// One Content-Length field value: a list of identical decimal numbers (`5, 5` is a
/// combined duplicate and means 5); anything else, or a value differing from `prev`, fails.
fn parse_content_length(prev: Option<u64>, value: &[u8]) -> Result<u64, HeadError> {
    const BAD: HeadError = HeadError::Invalid("invalid content-length");
    let mut result = prev;
    for item in value.split(|b| *b == b',').map(trim_ows) {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(BAD);
        }
        let n = item.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        });
        let n = n.ok_or(BAD)?;
        match result {
            Some(seen) if seen != n => {
                return Err(HeadError::Invalid("conflicting content-length"))
            }
            _ => result = Some(n),
        }
    }
    result.ok_or(BAD)
}

/// Runs httparse's header parsing with `max_headers` uninitialized slots (httparse fills
/// only what it parses, so nothing is zeroed per request), on the stack when they fit.
pub(super) fn with_header_slots<'buf, R>(
    max_headers: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'buf>>]) -> R,
) -> R {
    if max_headers <= STACK_HEADERS {
        let mut slots: [MaybeUninit<httparse::Header<'buf>>; STACK_HEADERS] =
            std::array::from_fn(|_| MaybeUninit::uninit());
        parse(&mut slots[..max_headers])
    } else {
        let mut slots = Vec::with_capacity(max_headers);
        slots.resize_with(max_headers, MaybeUninit::uninit);
        parse(&mut slots)
    }
}

/// The part of `buf` a head must fit in, and the effective limit (spans are `u32`).
pub(super) fn head_window<'a>(buf: &'a [u8], limits: &Limits) -> (&'a [u8], usize) {
    let max = limits.max_head_bytes.min(u32::MAX as usize);
    (buf.get(..buf.len().min(max)).unwrap_or(buf), max)
}
