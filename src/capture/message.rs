//! The logical-decoding form of a stock change: what the trigger emits, and how the capture
//! worker reads it back out of `pgoutput`'s binary protocol (version 1, `messages 'true'`).

/// Prefix of our messages; other prefixes in the slot (anyone's `pg_logical_emit_message`)
/// are skipped.
pub const PREFIX: &std::ffi::CStr = c"integ.stock";

/// `tenant NUL product NUL stock`: text columns cannot hold NUL, so the split is unambiguous.
pub fn encode(tenant: &str, product: &str, stock: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(tenant.len() + product.len() + 12);
    out.extend_from_slice(tenant.as_bytes());
    out.push(0);
    out.extend_from_slice(product.as_bytes());
    out.push(0);
    out.extend_from_slice(stock.to_string().as_bytes());
    out
}

pub fn decode(content: &[u8]) -> Result<(String, String, i32), String> {
    let mut parts = content.split(|b| *b == 0);
    let (Some(tenant), Some(product), Some(stock), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a stock message must have three NUL-separated parts".into());
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "a stock message is not UTF-8".to_string());
    let stock = std::str::from_utf8(stock)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .ok_or("a stock message's stock is not an integer")?;
    Ok((text(tenant)?, text(product)?, stock))
}

/// One change read back, stamped with its transaction's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockChange {
    pub tenant: String,
    pub product: String,
    pub stock: i32,
    /// LSN of the commit record: orders changes from the slot and from the trigger's
    /// table path (`listings.desired_lsn`) on one axis.
    pub commit_lsn: u64,
    /// Microseconds since 2000-01-01 (PostgreSQL's epoch).
    pub commit_time_us: i64,
}

/// What one peek of the slot held.
#[derive(Debug, Default)]
pub struct Batch {
    /// In commit order.
    pub changes: Vec<StockChange>,
    /// End of the last complete transaction seen: the slot may be advanced this far.
    pub last_commit_end: Option<u64>,
    /// Messages that were ours but unreadable (logged, skipped).
    pub malformed: Vec<String>,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("pgoutput record is truncated".into());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cstr(&mut self) -> Result<&'a [u8], String> {
        let end = self
            .buf
            .iter()
            .position(|b| *b == 0)
            .ok_or("pgoutput string is not terminated")?;
        let s = self.take(end)?;
        self.take(1)?;
        Ok(s)
    }
}

/// Folds pgoutput records (one per row of `pg_logical_slot_peek_binary_changes`) into a batch.
/// Only BEGIN, MESSAGE and COMMIT carry anything for us; other records are skipped.
pub fn read_batch<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Result<Batch, String> {
    let mut batch = Batch::default();
    let mut open: Option<(u64, i64)> = None;
    let mut pending: Vec<StockChange> = Vec::new();
    for record in records {
        let mut r = Reader { buf: record };
        match r.u8()? {
            b'B' => {
                let final_lsn = r.u64()?;
                let time = r.u64()? as i64;
                open = Some((final_lsn, time));
                pending.clear();
            }
            b'M' => {
                let flags = r.u8()?;
                let _lsn = r.u64()?;
                let prefix = r.cstr()?;
                let len = r.u32()? as usize;
                let content = r.take(len)?;
                if prefix != PREFIX.to_bytes() {
                    continue;
                }
                let Some((commit_lsn, commit_time_us)) = open.filter(|_| flags & 1 == 1) else {
                    batch.malformed.push("a stock message outside a transaction".into());
                    continue;
                };
                match decode(content) {
                    Ok((tenant, product, stock)) => pending.push(StockChange {
                        tenant,
                        product,
                        stock,
                        commit_lsn,
                        commit_time_us,
                    }),
                    Err(e) => batch.malformed.push(e),
                }
            }
            b'C' => {
                let _flags = r.u8()?;
                let _commit_lsn = r.u64()?;
                let end_lsn = r.u64()?;
                batch.changes.append(&mut pending);
                batch.last_commit_end = Some(end_lsn);
                open = None;
            }
            _ => {}
        }
    }
    Ok(batch)
}

/// The latest change of each (tenant, product), in commit order: applying them is the same as
/// applying every change in order.
pub fn latest_per_product(changes: Vec<StockChange>) -> Vec<StockChange> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<StockChange> = changes
        .into_iter()
        .rev()
        .filter(|c| seen.insert((c.tenant.clone(), c.product.clone())))
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "integ.stock";

    fn begin(lsn: u64, time: i64) -> Vec<u8> {
        let mut v = vec![b'B'];
        v.extend_from_slice(&lsn.to_be_bytes());
        v.extend_from_slice(&time.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v
    }
    fn message(prefix: &str, content: &[u8]) -> Vec<u8> {
        let mut v = vec![b'M', 1];
        v.extend_from_slice(&5u64.to_be_bytes());
        v.extend_from_slice(prefix.as_bytes());
        v.push(0);
        v.extend_from_slice(&(content.len() as u32).to_be_bytes());
        v.extend_from_slice(content);
        v
    }
    fn commit(lsn: u64, end: u64) -> Vec<u8> {
        let mut v = vec![b'C', 0];
        v.extend_from_slice(&lsn.to_be_bytes());
        v.extend_from_slice(&end.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v
    }

    #[test]
    fn payloads_round_trip_and_bad_ones_are_refused() {
        let e = encode("acme", "sku\t1", 42);
        assert_eq!(decode(&e).unwrap(), ("acme".into(), "sku\t1".into(), 42));
        assert!(decode(b"acme\0p").is_err());
        assert!(decode(b"acme\0p\0x").is_err());
        assert!(decode(b"a\0b\x001\0extra").is_err());
        assert!(decode(b"\xff\0p\x001").is_err());
    }

    #[test]
    fn messages_take_their_transactions_commit_and_others_are_skipped() {
        let records = [
            begin(100, 11),
            message(P, &encode("t", "p1", 3)),
            message("someone.else", b"x"),
            message(P, &encode("t", "p2", 4)),
            commit(100, 120),
            begin(200, 22),
            message(P, &encode("t", "p1", 9)),
            commit(200, 230),
            // a transaction cut off mid-way is not taken, nor is the slot moved past it
            begin(300, 33),
            message(P, &encode("t", "p1", 1)),
        ];
        let batch = read_batch(records.iter().map(Vec::as_slice)).unwrap();
        let got: Vec<(&str, i32, u64, i64)> = batch
            .changes
            .iter()
            .map(|c| (c.product.as_str(), c.stock, c.commit_lsn, c.commit_time_us))
            .collect();
        assert_eq!(got, vec![("p1", 3, 100, 11), ("p2", 4, 100, 11), ("p1", 9, 200, 22)]);
        assert_eq!(batch.last_commit_end, Some(230));
        let latest = latest_per_product(batch.changes);
        let got: Vec<(&str, i32)> = latest.iter().map(|c| (c.product.as_str(), c.stock)).collect();
        assert_eq!(got, vec![("p2", 4), ("p1", 9)]);
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let mut m = message(P, &encode("t", "p", 1));
        m.truncate(m.len() - 2);
        assert!(read_batch([begin(1, 1).as_slice(), m.as_slice()]).is_err());
        assert!(read_batch([&b"B\0\0"[..]]).is_err());
        let malformed = read_batch([
            begin(1, 1).as_slice(),
            message(P, b"junk").as_slice(),
            commit(1, 2).as_slice(),
        ])
        .unwrap();
        assert_eq!(malformed.changes.len(), 0);
        assert_eq!(malformed.malformed.len(), 1);
    }
}
