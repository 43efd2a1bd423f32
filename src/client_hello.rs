//! What a TLS ClientHello asks for (pure; read by the event-loop thread on
//! the bytes detection left in a session's buffer): the server name (SNI) and
//! the application protocols (ALPN) it offers, without terminating anything.
//!
//! The inbound side decides from these alone whether a TLS connection is for
//! spoke (SNI = the workload's identity: terminate it) or for the application
//! behind it (any other name: pass it through untouched), and whether a peer
//! speaks Linkerd's opaque transport (ALPN `transport.l5d.io/v1`). Only
//! reading is done here; the handshake is rustls's.
//!
//! Formats: TLS record layer (RFC 8446 §5.1: type 22, version, 16-bit
//! length), handshake header (type 1, 24-bit length), ClientHello body
//! (§4.1.2), `server_name` (RFC 6066 §3, extension 0) and ALPN (RFC 7301,
//! extension 16). A ClientHello may span several records; they are joined.

/// A record body is at most 2^14 bytes; a ClientHello bigger than this is
/// not one spoke will look at.
const MAX_HELLO: usize = 1 << 16;

/// What the bytes so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello has begun but not ended.
    Incomplete,
    /// Not a well-formed ClientHello.
    Invalid(&'static str),
    Parsed(ClientHello),
}

/// The parts of a ClientHello spoke decides on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// The `host_name` of the `server_name` extension, lowercased.
    pub server_name: Option<String>,
    /// The ALPN protocol names, in the client's order.
    pub alpn: Vec<Vec<u8>>,
    /// How many bytes of the input the records holding it took.
    pub len: usize,
}

/// Reads a ClientHello from the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Hello {
    let msg = match handshake_message(bytes) {
        Ok(m) => m,
        Err(h) => return h,
    };
    let (body, used) = msg;
    match hello_body(&body) {
        Ok(mut hello) => {
            hello.len = used;
            Hello::Parsed(hello)
        }
        Err(why) => Hello::Invalid(why),
    }
}

/// The handshake message carried by the first records: its body (after the
/// four-byte header) and the input bytes used.
fn handshake_message(bytes: &[u8]) -> Result<(Vec<u8>, usize), Hello> {
    let mut joined = Vec::new();
    let mut at = 0;
    loop {
        let Some(header) = bytes.get(at..at + 5) else {
            return Err(Hello::Incomplete);
        };
        if header[0] != 22 {
            return Err(Hello::Invalid("not a handshake record"));
        }
        if header[1] != 3 {
            return Err(Hello::Invalid("not a TLS record version"));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > (1 << 14) {
            return Err(Hello::Invalid("bad record length"));
        }
        let Some(fragment) = bytes.get(at + 5..at + 5 + len) else {
            return Err(Hello::Incomplete);
        };
        joined.extend_from_slice(fragment);
        at += 5 + len;
        if joined.len() >= 4 {
            if joined[0] != 1 {
                return Err(Hello::Invalid("not a ClientHello"));
            }
            let want = 4
                + (usize::from(joined[1]) << 16
                    | usize::from(joined[2]) << 8
                    | usize::from(joined[3]));
            if want > MAX_HELLO {
                return Err(Hello::Invalid("ClientHello too large"));
            }
            if joined.len() >= want {
                joined.truncate(want);
                joined.drain(..4);
                return Ok((joined, at));
            }
        }
    }
}

/// A cursor over a byte string, failing on reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err("truncated ClientHello");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<usize, &'static str> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, &'static str> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A vector with a `width`-byte length prefix, as a reader of its own.
    fn vec(&mut self, width: usize) -> Result<Reader<'a>, &'static str> {
        let n = if width == 1 { self.u8()? } else { self.u16()? };
        Ok(Reader {
            bytes: self.take(n)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

fn hello_body(body: &[u8]) -> Result<ClientHello, &'static str> {
    let mut r = Reader { bytes: body };
    let _legacy_version = r.take(2)?;
    let _random = r.take(32)?;
    let _session_id = r.vec(1)?;
    let _cipher_suites = r.vec(2)?;
    let _compression = r.vec(1)?;
    let mut hello = ClientHello::default();
    if r.is_empty() {
        // No extensions (allowed before TLS 1.3): no name, no protocols.
        return Ok(hello);
    }
    let mut exts = r.vec(2)?;
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.vec(2)?;
        match kind {
            0 => hello.server_name = server_name(&mut data)?,
            16 => {
                let mut list = data.vec(2)?;
                while !list.is_empty() {
                    let name = list.vec(1)?.bytes;
                    if name.is_empty() {
                        return Err("empty ALPN protocol name");
                    }
                    hello.alpn.push(name.to_vec());
                }
            }
            _ => {}
        }
    }
    Ok(hello)
}

fn server_name(data: &mut Reader<'_>) -> Result<Option<String>, &'static str> {
    let mut list = data.vec(2)?;
    while !list.is_empty() {
        let kind = list.u8()?;
        let name = list.vec(2)?.bytes;
        if kind == 0 {
            let name = std::str::from_utf8(name).map_err(|_| "server name is not text")?;
            if name.is_empty() || !name.is_ascii() {
                return Err("bad server name");
            }
            return Ok(Some(name.to_ascii_lowercase()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::{parse, ClientHello, Hello};

    /// A ClientHello body with these extensions.
    fn body(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![3, 3];
        b.extend([7u8; 32]);
        b.extend([32]);
        b.extend([9u8; 32]);
        b.extend([0, 4, 0x13, 0x01, 0x13, 0x02]);
        b.extend([1, 0]);
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend(kind.to_be_bytes());
            e.extend((data.len() as u16).to_be_bytes());
            e.extend(data);
        }
        b.extend((e.len() as u16).to_be_bytes());
        b.extend(e);
        b
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0];
        entry.extend((name.len() as u16).to_be_bytes());
        entry.extend(name.as_bytes());
        let mut d = (entry.len() as u16).to_be_bytes().to_vec();
        d.extend(entry);
        (0, d)
    }

    fn alpn(names: &[&[u8]]) -> (u16, Vec<u8>) {
        let mut list = Vec::new();
        for n in names {
            list.push(n.len() as u8);
            list.extend(*n);
        }
        let mut d = (list.len() as u16).to_be_bytes().to_vec();
        d.extend(list);
        (16, d)
    }

    /// The handshake message in records of at most `per_record` bytes.
    fn records(body: &[u8], per_record: usize) -> Vec<u8> {
        let mut msg = vec![1];
        msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend(body);
        let mut out = Vec::new();
        for chunk in msg.chunks(per_record) {
            out.extend([22, 3, 1]);
            out.extend((chunk.len() as u16).to_be_bytes());
            out.extend(chunk);
        }
        out
    }

    #[test]
    fn the_name_and_protocols_a_client_asks_for() {
        let b = body(&[
            (10, vec![0, 2, 0, 29]),
            sni("Books.Default.serviceaccount.identity.linkerd.cluster.local"),
            alpn(&[b"transport.l5d.io/v1", b"h2"]),
        ]);
        let bytes = records(&b, 1 << 14);
        let want = ClientHello {
            server_name: Some("books.default.serviceaccount.identity.linkerd.cluster.local".into()),
            alpn: vec![b"transport.l5d.io/v1".to_vec(), b"h2".to_vec()],
            len: bytes.len(),
        };
        assert_eq!(parse(&bytes), Hello::Parsed(want));
        // Bytes after it (an early data record, say) are not its.
        let mut more = bytes.clone();
        more.extend([23, 3, 3, 0, 1, 0]);
        assert!(matches!(parse(&more), Hello::Parsed(h) if h.len == bytes.len()));
    }

    #[test]
    fn split_across_records_and_every_prefix_incomplete() {
        let b = body(&[sni("a.example"), alpn(&[b"http/1.1"])]);
        let whole = records(&b, 1 << 14);
        let split = records(&b, 7);
        for bytes in [&whole, &split] {
            for n in 0..bytes.len() {
                assert_eq!(parse(&bytes[..n]), Hello::Incomplete, "prefix {n}");
            }
            match parse(bytes) {
                Hello::Parsed(h) => {
                    assert_eq!(h.server_name.as_deref(), Some("a.example"));
                    assert_eq!(h.alpn, vec![b"http/1.1".to_vec()]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn no_extensions_or_no_name() {
        let mut b = body(&[]);
        b.truncate(b.len() - 2);
        assert!(matches!(parse(&records(&b, 1 << 14)),
            Hello::Parsed(h) if h.server_name.is_none() && h.alpn.is_empty()));
        let b = body(&[alpn(&[b"h2"])]);
        assert!(matches!(parse(&records(&b, 1 << 14)),
            Hello::Parsed(h) if h.server_name.is_none()));
    }

    #[test]
    fn malformed_hellos_are_invalid_not_panics() {
        assert!(matches!(parse(&[23, 3, 3, 0, 1, 0]), Hello::Invalid(_)));
        assert!(matches!(parse(&[22, 2, 0, 0, 1, 0]), Hello::Invalid(_)));
        assert!(matches!(parse(&[22, 3, 1, 0, 0]), Hello::Invalid(_)));
        // A ServerHello.
        let mut sh = records(&body(&[]), 1 << 14);
        sh[5] = 2;
        assert!(matches!(parse(&sh), Hello::Invalid(_)));
        // Lengths that run past their parents, at every byte.
        let good = records(&body(&[sni("a.b"), alpn(&[b"h2"])]), 1 << 14);
        for i in 9..good.len() {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = v;
                let _ = parse(&bad);
            }
        }
        // An empty name, an empty protocol.
        let b = body(&[sni("")]);
        assert!(matches!(parse(&records(&b, 1 << 14)), Hello::Invalid(_)));
        let b = body(&[alpn(&[b""])]);
        assert!(matches!(parse(&records(&b, 1 << 14)), Hello::Invalid(_)));
    }
}
