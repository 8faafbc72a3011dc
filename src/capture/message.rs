//! The WAL form of a stock change: what the trigger emits (a transactional logical message),
//! and how the capture worker pairs messages with the commit or abort that decides them.

/// Prefix of our messages; other prefixes (anyone's `pg_logical_emit_message`) are skipped.
pub const PREFIX: &std::ffi::CStr = c"integ.stock";
/// Prefix of price messages (`integ.track_price`).
pub const PRICE_PREFIX: &std::ffi::CStr = c"integ.price";
/// Marks a price message's content in the collector (UTF-8 text never starts with 0xFF).
pub const PRICE_MARK: u8 = 0xFF;

/// `tenant NUL product NUL price NUL currency`: the price as numeric text ("" for NULL), the
/// currency "" when none.
pub fn encode_price(tenant: &[u8], product: &[u8], price: Option<&str>, currency: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(tenant.len() + product.len() + 24);
    for (i, part) in [
        tenant,
        product,
        price.unwrap_or("").as_bytes(),
        currency.unwrap_or("").as_bytes(),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            out.push(0);
        }
        out.extend_from_slice(part);
    }
    out
}

/// (tenant, product, price, currency) of a price message.
pub fn decode_price(content: &[u8]) -> Result<(String, String, Option<String>, Option<String>), String> {
    let parts: Vec<&[u8]> = content.split(|b| *b == 0).collect();
    let [tenant, product, price, currency] = parts.as_slice() else {
        return Err("a price message must have four NUL-separated parts".into());
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "a price message is not UTF-8".to_string());
    let optional = |b: &[u8]| text(b).map(|t| (!t.is_empty()).then_some(t));
    let price = optional(price)?;
    if price
        .as_deref()
        .is_some_and(|p| rust_decimal::Decimal::from_str_exact(p).is_err() && p.parse::<f64>().is_err())
    {
        return Err("a price message's price is not a number".into());
    }
    Ok((text(tenant)?, text(product)?, price, optional(currency)?))
}

/// One price change read back, stamped with its transaction's commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceChange {
    pub tenant: String,
    pub product: String,
    /// numeric text; None: NULL
    pub price: Option<String>,
    pub currency: Option<String>,
    pub commit_lsn: u64,
    pub commit_time_us: i64,
}

/// The latest price change of each (tenant, product), in key order.
pub fn latest_price_per_product(changes: Vec<PriceChange>) -> Vec<PriceChange> {
    latest_by_key(changes, |c| (&c.tenant, &c.product))
}

/// The last of each key's changes, in key order (applying them equals applying all in order;
/// key order walks the listings index, and mostly the heap, in order).
fn latest_by_key<T>(changes: Vec<T>, key: impl Fn(&T) -> (&String, &String)) -> Vec<T> {
    // keys borrowed, not copied: a read holds up to READ_CHANGES of them
    let mut seen = std::collections::HashSet::with_capacity(changes.len().min(1 << 16));
    let latest: Vec<bool> = changes.iter().rev().map(|c| seen.insert(key(c))).collect();
    drop(seen);
    let mut out: Vec<T> = changes
        .into_iter()
        .zip(latest.into_iter().rev())
        .filter_map(|(c, latest)| latest.then_some(c))
        .collect();
    out.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
    out
}

/// `tenant NUL product NUL stock`: text columns cannot hold NUL, so the split is unambiguous.
pub fn encode(tenant: impl AsRef<[u8]>, product: impl AsRef<[u8]>, stock: i32) -> Vec<u8> {
    let (tenant, product) = (tenant.as_ref(), product.as_ref());
    let mut out = Vec::with_capacity(tenant.len() + product.len() + 12);
    out.extend_from_slice(tenant);
    out.push(0);
    out.extend_from_slice(product);
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
    /// LSN of the commit record: orders changes read from WAL and those of the trigger's
    /// table path (`listings.desired_lsn`) on one axis.
    pub commit_lsn: u64,
    /// Microseconds since 2000-01-01 (PostgreSQL's epoch).
    pub commit_time_us: i64,
}

/// Messages of transactions still in progress, by transaction id (a subtransaction's
/// messages carry its own id), until the commit or abort record decides them.
#[derive(Default)]
pub struct Collector {
    pending: std::collections::HashMap<u32, Vec<(u64, Vec<u8>)>>,
    pub malformed: Vec<String>,
    /// Price changes of committed transactions, until the capture worker applies them.
    pub committed_prices: Vec<PriceChange>,
}

impl Collector {
    pub fn message(&mut self, xid: u32, lsn: u64, content: &[u8]) {
        self.pending.entry(xid).or_default().push((lsn, content.to_vec()));
    }

    /// A commit (or COMMIT PREPARED) of `xid` and its committed subtransactions: their messages,
    /// in WAL order, stamped with the commit.
    pub fn commit(&mut self, xid: u32, subxids: &[u32], commit_lsn: u64, commit_time_us: i64) -> Vec<StockChange> {
        let mut messages: Vec<(u64, Vec<u8>)> = Vec::new();
        for x in std::iter::once(&xid).chain(subxids) {
            if let Some(m) = self.pending.remove(x) {
                messages.extend(m);
            }
        }
        messages.sort_by_key(|(lsn, _)| *lsn);
        let mut out = Vec::with_capacity(messages.len());
        for (_, content) in messages {
            if let Some((&PRICE_MARK, price)) = content.split_first() {
                match decode_price(price) {
                    Ok((tenant, product, price, currency)) => self.committed_prices.push(PriceChange {
                        tenant,
                        product,
                        price,
                        currency,
                        commit_lsn,
                        commit_time_us,
                    }),
                    Err(e) => self.malformed.push(e),
                }
                continue;
            }
            match decode(&content) {
                Ok((tenant, product, stock)) => out.push(StockChange {
                    tenant,
                    product,
                    stock,
                    commit_lsn,
                    commit_time_us,
                }),
                Err(e) => self.malformed.push(e),
            }
        }
        out
    }

    /// An abort (of a transaction, a subtransaction, or ROLLBACK PREPARED): its messages go.
    pub fn abort(&mut self, xid: u32, subxids: &[u32]) {
        for x in std::iter::once(&xid).chain(subxids) {
            self.pending.remove(x);
        }
    }

    /// Where reading must start again to see every message still undecided.
    pub fn oldest_pending(&self) -> Option<u64> {
        self.pending
            .values()
            .filter_map(|m| m.first().map(|(lsn, _)| *lsn))
            .min()
    }

    pub fn pending_transactions(&self) -> usize {
        self.pending.len()
    }
}

/// The latest change of each (tenant, product), in commit order: applying them is the same as
/// applying every change in order.
pub fn latest_per_product(changes: Vec<StockChange>) -> Vec<StockChange> {
    latest_by_key(changes, |c| (&c.tenant, &c.product))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn commits_take_their_subtransactions_and_aborts_drop_theirs() {
        let mut c = Collector::default();
        c.message(10, 100, &encode("t", "p1", 1));
        c.message(11, 110, &encode("t", "p2", 2)); // subtransaction of 10, committed
        c.message(12, 120, &encode("t", "p3", 3)); // subtransaction of 10, rolled back
        c.message(20, 105, &encode("t", "p1", 9)); // another transaction, still open
        c.message(10, 130, b"junk");
        c.abort(12, &[]);
        assert_eq!(c.oldest_pending(), Some(100));
        let got = c.commit(10, &[11], 200, 7);
        let got: Vec<(&str, i32, u64, i64)> = got
            .iter()
            .map(|x| (x.product.as_str(), x.stock, x.commit_lsn, x.commit_time_us))
            .collect();
        assert_eq!(got, vec![("p1", 1, 200, 7), ("p2", 2, 200, 7)]);
        assert_eq!(c.malformed.len(), 1);
        assert_eq!(c.oldest_pending(), Some(105));
        // a prepared transaction is decided by COMMIT PREPARED / ROLLBACK PREPARED, by its xid
        c.abort(20, &[]);
        assert_eq!(c.oldest_pending(), None);
        assert_eq!(c.pending_transactions(), 0);
        assert!(c.commit(30, &[], 300, 0).is_empty());
    }

    #[test]
    fn price_messages_round_trip_and_are_collected_apart() {
        let e = encode_price(b"acme", b"sku-1", Some("100.50"), Some("MXN"));
        assert_eq!(
            decode_price(&e).unwrap(),
            ("acme".into(), "sku-1".into(), Some("100.50".into()), Some("MXN".into()))
        );
        let null = encode_price(b"acme", b"sku-1", None, None);
        assert_eq!(decode_price(&null).unwrap().2, None);
        assert!(decode_price(b"acme\0p\0abc\0").is_err());
        assert!(decode_price(b"acme\0p\x001").is_err());
        let mut c = Collector::default();
        let mut marked = vec![PRICE_MARK];
        marked.extend(encode_price(b"t", b"p1", Some("9.99"), None));
        c.message(1, 10, &encode("t", "p1", 3));
        c.message(1, 11, &marked);
        let stock = c.commit(1, &[], 20, 5);
        assert_eq!(stock.len(), 1);
        assert_eq!(c.committed_prices.len(), 1);
        assert_eq!(c.committed_prices[0].price.as_deref(), Some("9.99"));
        assert_eq!(c.committed_prices[0].commit_lsn, 20);
    }

    #[test]
    fn the_latest_change_of_each_product_wins() {
        let mut c = Collector::default();
        c.message(1, 10, &encode("t", "p1", 3));
        c.message(1, 11, &encode("t", "p2", 4));
        c.message(1, 12, &encode("t", "p1", 9));
        let latest = latest_per_product(c.commit(1, &[], 20, 0));
        let got: Vec<(&str, i32)> = latest.iter().map(|c| (c.product.as_str(), c.stock)).collect();
        assert_eq!(got, vec![("p1", 9), ("p2", 4)]);
    }
}
