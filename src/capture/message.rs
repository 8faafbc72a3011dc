//! The WAL form of a stock change: what the trigger emits (a transactional logical message),
//! and how the capture worker pairs messages with the commit or abort that decides them.

/// Prefix of our messages; other prefixes (anyone's `pg_logical_emit_message`) are skipped.
pub const PREFIX: &std::ffi::CStr = c"integ.stock";
/// Prefix of price messages (`integ.track_price`).
pub const PRICE_PREFIX: &std::ffi::CStr = c"integ.price";

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
pub type PriceParts<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

pub fn decode_price(content: &[u8]) -> Result<PriceParts<'_>, String> {
    let mut parts = content.split(|b| *b == 0);
    let (Some(tenant), Some(product), Some(price), Some(currency), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a price message must have four NUL-separated parts".into());
    };
    let text = |b| std::str::from_utf8(b).map_err(|_| "a price message is not UTF-8".to_string());
    let optional = |b| text(b).map(|t| (!t.is_empty()).then_some(t));
    let price = optional(price)?;
    if price.is_some_and(|p| !is_number(p)) {
        return Err("a price message's price is not a number".into());
    }
    Ok((text(tenant)?, text(product)?, price, optional(currency)?))
}

/// Whether `text` reads as a numeric. What the trigger prints (`-`, digits, one `.`) is
/// checked byte by byte: a parse of every change was most of the price capture's own work.
fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (all_digits(whole) && all_digits(fraction))
        || rust_decimal::Decimal::from_str_exact(text).is_ok()
        || text.parse::<f64>().is_ok()
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

pub fn decode(content: &[u8]) -> Result<(&str, &str, i32), String> {
    let mut parts = content.split(|b| *b == 0);
    let (Some(tenant), Some(product), Some(stock), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("a stock message must have three NUL-separated parts".into());
    };
    let text = |b| std::str::from_utf8(b).map_err(|_| "a stock message is not UTF-8".to_string());
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

/// Which of our messages a content is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Stock,
    Price,
}

/// The messages of one undecided (sub)transaction, one after the other in `bytes`: kind (1
/// byte), WAL position (8), length (4), content. One buffer per transaction, reused: reading
/// tens of thousands of changes a second, an allocation per message was a fifth of the
/// capture's time.
#[derive(Default)]
struct Undecided {
    first_lsn: u64,
    bytes: Vec<u8>,
}

const MESSAGE_HEADER: usize = 13;

impl Undecided {
    fn push(&mut self, kind: Kind, lsn: u64, content: &[u8]) {
        if self.bytes.is_empty() {
            self.first_lsn = lsn;
        }
        self.bytes.push(kind as u8);
        self.bytes.extend_from_slice(&lsn.to_ne_bytes());
        self.bytes.extend_from_slice(&(content.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(content);
    }

    /// (kind, lsn, content) of each message, in the order pushed.
    fn messages(&self) -> impl Iterator<Item = (Kind, u64, &[u8])> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let header = self.bytes.get(at..at + MESSAGE_HEADER)?;
            let kind = if header[0] == Kind::Price as u8 {
                Kind::Price
            } else {
                Kind::Stock
            };
            let lsn = u64::from_ne_bytes(header[1..9].try_into().ok()?);
            let len = u32::from_ne_bytes(header[9..13].try_into().ok()?) as usize;
            let content = self.bytes.get(at + MESSAGE_HEADER..at + MESSAGE_HEADER + len)?;
            at += MESSAGE_HEADER + len;
            Some((kind, lsn, content))
        })
    }
}

/// A committed change waiting to be applied: the latest of its product so far.
struct Latest<T> {
    value: T,
    commit_lsn: u64,
    commit_time_us: i64,
}

/// Buffers kept for reuse, and the largest kept (a huge transaction's is let go).
const SPARE_BUFFERS: usize = 64;
const SPARE_CAPACITY: usize = 64 * 1024;

/// Messages of transactions still in progress, by transaction id (a subtransaction's
/// messages carry its own id), until the commit or abort record decides them; and the
/// committed changes, the latest of each product (by the key `tenant NUL product`), until
/// the capture worker takes them to apply.
#[derive(Default)]
pub struct Collector {
    pending: std::collections::HashMap<u32, Undecided>,
    spare: Vec<Vec<u8>>,
    pub malformed: Vec<String>,
    stock: std::collections::HashMap<Vec<u8>, Latest<i32>>,
    /// the message's `price NUL currency`, checked: one buffer per product, reused
    prices: std::collections::HashMap<Vec<u8>, Latest<Vec<u8>>>,
}

/// Records the value `set` makes, committed at `commit_lsn`, as the latest change of `key`:
/// `set` gets the value it replaces, to reuse; the key is copied only the first time.
fn remember<T: Default>(
    map: &mut std::collections::HashMap<Vec<u8>, Latest<T>>,
    key: &[u8],
    commit_lsn: u64,
    commit_time_us: i64,
    set: impl FnOnce(T) -> T,
) {
    match map.get_mut(key) {
        Some(slot) => {
            slot.value = set(std::mem::take(&mut slot.value));
            slot.commit_lsn = commit_lsn;
            slot.commit_time_us = commit_time_us;
        }
        None => {
            let latest = Latest {
                value: set(T::default()),
                commit_lsn,
                commit_time_us,
            };
            map.insert(key.to_vec(), latest);
        }
    }
}

/// The taken changes in key order (which walks the listings index, and mostly the heap, in
/// order), the key split back into tenant and product.
fn in_key_order<T, C>(
    map: &mut std::collections::HashMap<Vec<u8>, Latest<T>>,
    make: impl Fn(String, String, Latest<T>) -> C,
) -> Vec<C> {
    let mut entries: Vec<(Vec<u8>, Latest<T>)> = map.drain().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
        .into_iter()
        .filter_map(|(key, latest)| {
            let at = key.iter().position(|b| *b == 0)?;
            let tenant = String::from_utf8(key[..at].to_vec()).ok()?;
            let product = String::from_utf8(key[at + 1..].to_vec()).ok()?;
            Some(make(tenant, product, latest))
        })
        .collect()
}

impl Collector {
    pub fn message(&mut self, xid: u32, lsn: u64, kind: Kind, content: &[u8]) {
        let spare = &mut self.spare;
        self.pending
            .entry(xid)
            .or_insert_with(|| Undecided {
                first_lsn: lsn,
                bytes: spare.pop().unwrap_or_default(),
            })
            .push(kind, lsn, content);
    }

    fn recycle(&mut self, mut undecided: Undecided) {
        if self.spare.len() < SPARE_BUFFERS && undecided.bytes.capacity() <= SPARE_CAPACITY {
            undecided.bytes.clear();
            self.spare.push(undecided.bytes);
        }
    }

    /// A commit (or COMMIT PREPARED) of `xid` and its committed subtransactions: their
    /// messages, in WAL order, become the latest changes of their products, stamped with the
    /// commit. Returns how many changes it committed.
    pub fn commit(&mut self, xid: u32, subxids: &[u32], commit_lsn: u64, commit_time_us: i64) -> usize {
        let mut decided: Vec<Undecided> = Vec::new();
        for x in std::iter::once(&xid).chain(subxids) {
            if let Some(u) = self.pending.remove(x) {
                decided.push(u);
            }
        }
        if decided.is_empty() {
            return 0;
        }
        let mut messages: Vec<(Kind, u64, &[u8])> = decided.iter().flat_map(|u| u.messages()).collect();
        if decided.len() > 1 {
            messages.sort_by_key(|(_, lsn, _)| *lsn);
        }
        let count = messages.len();
        for (kind, _, content) in messages {
            let decoded = match kind {
                Kind::Stock => decode(content).map(|(t, p, stock)| {
                    let key = message_key(content, t, p);
                    remember(&mut self.stock, key, commit_lsn, commit_time_us, |_| stock);
                }),
                Kind::Price => decode_price(content).map(|(t, p, _, _)| {
                    let key = message_key(content, t, p);
                    let value = &content[key.len() + 1..];
                    remember(&mut self.prices, key, commit_lsn, commit_time_us, |mut kept| {
                        kept.clear();
                        kept.extend_from_slice(value);
                        kept
                    });
                }),
            };
            if let Err(e) = decoded {
                self.malformed.push(e);
            }
        }
        for u in decided {
            self.recycle(u);
        }
        count
    }

    /// An abort (of a transaction, a subtransaction, or ROLLBACK PREPARED): its messages go.
    pub fn abort(&mut self, xid: u32, subxids: &[u32]) {
        for x in std::iter::once(&xid).chain(subxids) {
            if let Some(u) = self.pending.remove(x) {
                self.recycle(u);
            }
        }
    }

    /// The latest committed stock change of each product since the last take, in key order.
    pub fn take_stock(&mut self) -> Vec<StockChange> {
        in_key_order(&mut self.stock, |tenant, product, l| StockChange {
            tenant,
            product,
            stock: l.value,
            commit_lsn: l.commit_lsn,
            commit_time_us: l.commit_time_us,
        })
    }

    /// The latest committed price change of each product since the last take, in key order.
    pub fn take_prices(&mut self) -> Vec<PriceChange> {
        in_key_order(&mut self.prices, |tenant, product, l| {
            // checked by decode_price when kept: `price NUL currency`, UTF-8, "" for none
            let text = String::from_utf8_lossy(&l.value);
            let (price, currency) = text.split_once('\0').unwrap_or((&text, ""));
            let optional = |s: &str| (!s.is_empty()).then(|| s.to_string());
            PriceChange {
                tenant,
                product,
                price: optional(price),
                currency: optional(currency),
                commit_lsn: l.commit_lsn,
                commit_time_us: l.commit_time_us,
            }
        })
    }

    /// Where reading must start again to see every message still undecided.
    pub fn oldest_pending(&self) -> Option<u64> {
        self.pending.values().map(|u| u.first_lsn).min()
    }

    /// Products whose committed changes wait to be taken.
    pub fn products_held(&self) -> usize {
        self.stock.len() + self.prices.len()
    }

    pub fn pending_transactions(&self) -> usize {
        self.pending.len()
    }
}

/// `tenant NUL product`: the start of a message's content, as decoded into `tenant` and
/// `product`; the key the latest change of each product is kept under.
fn message_key<'a>(content: &'a [u8], tenant: &str, product: &str) -> &'a [u8] {
    &content[..tenant.len() + 1 + product.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_bad_ones_are_refused() {
        let e = encode("acme", "sku\t1", 42);
        assert_eq!(decode(&e).unwrap(), ("acme", "sku\t1", 42));
        assert!(decode(b"acme\0p").is_err());
        assert!(decode(b"acme\0p\0x").is_err());
        assert!(decode(b"a\0b\x001\0extra").is_err());
        assert!(decode(b"\xff\0p\x001").is_err());
    }

    fn stock(c: &mut Collector) -> Vec<(String, i32, u64, i64)> {
        c.take_stock()
            .into_iter()
            .map(|x| (x.product, x.stock, x.commit_lsn, x.commit_time_us))
            .collect()
    }

    #[test]
    fn commits_take_their_subtransactions_and_aborts_drop_theirs() {
        let mut c = Collector::default();
        c.message(10, 100, Kind::Stock, &encode("t", "p1", 1));
        c.message(11, 110, Kind::Stock, &encode("t", "p2", 2)); // subtransaction of 10, committed
        c.message(12, 120, Kind::Stock, &encode("t", "p3", 3)); // subtransaction of 10, rolled back
        c.message(20, 105, Kind::Stock, &encode("t", "p1", 9)); // another transaction, still open
        c.message(10, 130, Kind::Stock, b"junk");
        c.abort(12, &[]);
        assert_eq!(c.oldest_pending(), Some(100));
        assert_eq!(c.commit(10, &[11], 200, 7), 3);
        assert_eq!(stock(&mut c), vec![("p1".into(), 1, 200, 7), ("p2".into(), 2, 200, 7)]);
        assert_eq!(c.malformed.len(), 1);
        assert_eq!(c.oldest_pending(), Some(105));
        // a prepared transaction is decided by COMMIT PREPARED / ROLLBACK PREPARED, by its xid
        c.abort(20, &[]);
        assert_eq!(c.oldest_pending(), None);
        assert_eq!(c.pending_transactions(), 0);
        assert_eq!(c.commit(30, &[], 300, 0), 0);
        assert!(c.take_stock().is_empty(), "taken once");
    }

    #[test]
    fn a_subtransaction_written_before_its_parent_is_applied_in_wal_order() {
        let mut c = Collector::default();
        c.message(11, 100, Kind::Stock, &encode("t", "p1", 1)); // subtransaction, first
        c.message(10, 110, Kind::Stock, &encode("t", "p1", 2)); // its parent, later
        c.message(12, 120, Kind::Stock, &encode("t", "p1", 3)); // another subtransaction, last
        assert_eq!(c.commit(10, &[12, 11], 200, 0), 3);
        assert_eq!(stock(&mut c), vec![("p1".into(), 3, 200, 0)]);
    }

    #[test]
    fn price_messages_round_trip_and_are_collected_apart() {
        let e = encode_price(b"acme", b"sku-1", Some("100.50"), Some("MXN"));
        assert_eq!(
            decode_price(&e).unwrap(),
            ("acme", "sku-1", Some("100.50"), Some("MXN"))
        );
        let null = encode_price(b"acme", b"sku-1", None, None);
        assert_eq!(decode_price(&null).unwrap().2, None);
        assert!(decode_price(b"acme\0p\0abc\0").is_err());
        assert!(decode_price(b"acme\0p\x001").is_err());
        let mut c = Collector::default();
        c.message(1, 10, Kind::Stock, &encode("t", "p1", 3));
        c.message(1, 11, Kind::Price, &encode_price(b"t", b"p1", Some("9.99"), None));
        c.message(1, 12, Kind::Price, b"t\0p2\0not a price\0");
        assert_eq!(c.commit(1, &[], 20, 5), 3);
        assert_eq!(c.take_stock().len(), 1);
        let prices = c.take_prices();
        assert_eq!(prices.len(), 1);
        assert_eq!(
            (prices[0].product.as_str(), prices[0].price.as_deref()),
            ("p1", Some("9.99"))
        );
        assert_eq!(prices[0].commit_lsn, 20);
        assert_eq!(c.malformed, vec!["a price message's price is not a number".to_string()]);
    }

    #[test]
    fn prices_read_as_numbers_whatever_their_form() {
        for ok in [
            "0",
            "-12",
            "100.50",
            "0.000001",
            "NaN",
            "Infinity",
            "-Infinity",
            "1e3",
            "12345678901234567890123456789012345.5",
        ] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["", "-", "1.2.3", "--1", "12a", "1 000", "0x10", "abc"] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn a_products_later_price_replaces_its_earlier_one_whole() {
        let mut c = Collector::default();
        c.message(
            1,
            10,
            Kind::Price,
            &encode_price(b"t", b"p1", Some("1234.5678"), Some("MXN")),
        );
        c.commit(1, &[], 20, 0);
        c.message(2, 30, Kind::Price, &encode_price(b"t", b"p1", Some("9"), None));
        c.commit(2, &[], 40, 1);
        let got = c.take_prices();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].price.as_deref(), got[0].currency.as_deref()), (Some("9"), None));
        assert_eq!((got[0].commit_lsn, got[0].commit_time_us), (40, 1));
        c.message(3, 50, Kind::Price, &encode_price(b"t", b"p1", None, Some("USD")));
        c.commit(3, &[], 60, 2);
        let got = c.take_prices();
        assert_eq!(
            (got[0].price.as_deref(), got[0].currency.as_deref()),
            (None, Some("USD"))
        );
    }

    #[test]
    fn the_latest_change_of_each_product_wins_in_key_order() {
        let mut c = Collector::default();
        c.message(1, 10, Kind::Stock, &encode("t", "p1", 3));
        c.message(1, 11, Kind::Stock, &encode("t", "p2", 4));
        c.message(1, 12, Kind::Stock, &encode("t", "p1", 9));
        c.message(2, 13, Kind::Stock, &encode("a", "p9", 1));
        c.message(2, 14, Kind::Stock, &encode("ab", "p0", 2));
        assert_eq!(c.commit(2, &[], 30, 0), 2);
        assert_eq!(c.commit(1, &[], 40, 0), 3);
        let got: Vec<(String, String, i32, u64)> = c
            .take_stock()
            .into_iter()
            .map(|x| (x.tenant, x.product, x.stock, x.commit_lsn))
            .collect();
        let want = [
            ("a", "p9", 1, 30),
            ("ab", "p0", 2, 30),
            ("t", "p1", 9, 40),
            ("t", "p2", 4, 40),
        ];
        let want: Vec<(String, String, i32, u64)> = want
            .iter()
            .map(|(t, p, s, l)| (t.to_string(), p.to_string(), *s, *l))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn buffers_are_reused_but_a_huge_one_is_let_go() {
        let mut c = Collector::default();
        c.message(1, 10, Kind::Stock, &encode("t", "p1", 3));
        c.commit(1, &[], 20, 0);
        assert_eq!(c.spare.len(), 1);
        c.message(2, 30, Kind::Stock, &encode("t", "p1", 4));
        assert_eq!(c.spare.len(), 0, "taken from the spares");
        let big = vec![b'x'; SPARE_CAPACITY];
        c.message(2, 31, Kind::Stock, &big);
        c.abort(2, &[]);
        assert_eq!(c.spare.len(), 0);
    }
}
