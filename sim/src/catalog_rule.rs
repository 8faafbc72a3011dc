//! The rule every catalog generator follows (`POST /_admin/<marketplace>/catalog`, see the
//! README's "Catalog generators"), so tests can compute what an import and `link_by_sku` find:
//!
//! - product i (0-based) has `variations` units when `variations_every` divides i (both > 0),
//!   else one;
//! - units are numbered n = 1, 2, ... across the catalog, in order;
//! - a unit's SKU is `{sku_prefix}{i}` (a product with one unit) or `{sku_prefix}{i}-{j}` (unit j
//!   of a product with more, 0-based);
//! - then, if `missing_sku_every` divides n the unit has no SKU, else if `duplicate_sku_every`
//!   divides n (n > 1) it has unit n−1's SKU (none if that one has none);
//! - `without_sku` counts every unit left without a SKU (however it got there), `duplicated` the
//!   units given a copy of a non-empty SKU.
//!
//! [`Common`] holds the body fields every generator shares, [`Plan`] walks the units and counts
//! them; each marketplace adds its ids, its own fields and its limits. [`Decimal`] is the exact
//! price they share.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use std::fmt;

/// `first_id` when the body has none (TikTok Shop has its own).
pub const DEFAULT_FIRST_ID: u64 = 1_000_000;

fn default_sku_prefix() -> String {
    "SKU-".into()
}
fn default_price() -> Value {
    Value::String("100.00".into())
}
fn default_stock() -> i64 {
    5
}

/// Present means a number: `null` is refused as for the other fields.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    u64::deserialize(d).map(Some)
}

/// The body fields every generator takes. MercadoLibre and SHEIN flatten it into their own body
/// (which refuses fields it does not know); Shopify and TikTok Shop read it with
/// [`Common::from_lenient`].
#[derive(Clone, Debug, Deserialize)]
pub struct Common {
    pub products: u64,
    /// Product i is numbered `first_id + i`; without it, the marketplace's default.
    #[serde(default, deserialize_with = "present")]
    pub first_id: Option<u64>,
    #[serde(default)]
    pub variations: u64,
    #[serde(default)]
    pub variations_every: u64,
    #[serde(default = "default_sku_prefix")]
    pub sku_prefix: String,
    #[serde(default)]
    pub missing_sku_every: u64,
    #[serde(default)]
    pub duplicate_sku_every: u64,
    /// Decimal text ("199.90"); MercadoLibre also takes a JSON number.
    #[serde(default = "default_price")]
    pub price: Value,
    /// Every unit's stock; each marketplace has its own bounds.
    #[serde(default = "default_stock")]
    pub stock: i64,
}

/// The JSON names of [`Common`]'s fields.
const FIELDS: &[&str] = &[
    "products",
    "first_id",
    "variations",
    "variations_every",
    "sku_prefix",
    "missing_sku_every",
    "duplicate_sku_every",
    "price",
    "stock",
];

impl Common {
    /// The fields as Shopify and TikTok Shop read their bodies: a `null` is an absent field and
    /// the marketplace's own fields are left to it. Refused: the name of the (first) field that is
    /// wrong, for the marketplace to word the error.
    pub fn from_lenient(body: &Value) -> Result<Common, &'static str> {
        let mut fields = serde_json::Map::new();
        for name in FIELDS {
            if let Some(v) = body.get(name).filter(|v| !v.is_null()) {
                fields.insert(name.to_string(), v.clone());
            }
        }
        let all = Value::Object(fields);
        Common::deserialize(&all).map_err(|_| {
            // serde does not say which field: the first that fails alone (none: products is missing)
            let fails_alone = |name: &&str| {
                let Some(v) = all.get(name) else { return false };
                let mut alone = json!({"products": 0});
                alone[name] = v.clone();
                Common::deserialize(&alone).is_err()
            };
            FIELDS.iter().copied().find(fails_alone).unwrap_or("products")
        })
    }

    /// serde's message for an unknown field of a body flattening [`Common`] names the field but
    /// not the ones accepted: adds them, `own` being the marketplace's.
    pub fn name_accepted_fields(message: String, own: &[&str]) -> String {
        let Some((name, rest)) = message.strip_prefix("unknown field `").and_then(|m| m.split_once('`')) else {
            return message;
        };
        let accepted: Vec<String> = own.iter().chain(FIELDS).map(|f| format!("`{f}`")).collect();
        format!("unknown field `{name}`, expected one of {}{rest}", accepted.join(", "))
    }

    /// `first_id`, or the marketplace's `default`.
    pub fn first_id_or(&self, default: u64) -> u64 {
        self.first_id.unwrap_or(default)
    }

    /// `price` as text (Shopify, TikTok Shop); whether it is decimal is theirs to check.
    pub fn price_text(&self) -> Result<&str, String> {
        self.price.as_str().ok_or_else(|| "price must be a string".to_string())
    }

    /// Whether product `i` has `variations` units.
    pub fn has_variations(&self, i: u64) -> bool {
        self.variations > 0 && self.variations_every > 0 && i.is_multiple_of(self.variations_every)
    }

    /// How many units product `i` has.
    pub fn units_of(&self, i: u64) -> u64 {
        if self.has_variations(i) {
            self.variations
        } else {
            1
        }
    }

    /// How many products have `variations` units.
    pub fn products_with_variations(&self) -> u64 {
        if self.variations > 0 && self.variations_every > 0 {
            self.products.div_ceil(self.variations_every)
        } else {
            0
        }
    }

    /// How many units the catalog has, without building it (None: more than a u64 holds).
    pub fn units(&self) -> Option<u64> {
        let varied = self.products_with_variations();
        varied.checked_mul(self.variations)?.checked_add(self.products - varied)
    }

    /// The catalog's units, product by product.
    pub fn plan(&self) -> Plan<'_> {
        Plan {
            common: self,
            next_i: 0,
            previous: None,
            counts: Counts::default(),
        }
    }
}

/// One product of a [`Plan`]: its index and its units, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedProduct {
    pub i: u64,
    pub units: Vec<PlannedUnit>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedUnit {
    /// Its index in the product (0-based).
    pub j: u64,
    /// Its number in the catalog (from 1).
    pub n: u64,
    /// Its SKU once the missing and duplicate rules applied.
    pub sku: Option<String>,
}

/// What a generator answers (plus anything of its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub products: u64,
    pub units: u64,
    pub without_sku: u64,
    pub duplicated: u64,
}

impl Counts {
    /// `{"products", "units", "without_sku", "duplicated"}`.
    pub fn to_json(self) -> Value {
        json!({"products": self.products, "units": self.units, "without_sku": self.without_sku,
               "duplicated": self.duplicated})
    }
}

/// The catalog's units, one product at a time (never all held at once); [`Plan::counts`] counts
/// what it has given so far, the whole catalog once it has ended.
pub struct Plan<'a> {
    common: &'a Common,
    next_i: u64,
    /// The SKU of the last unit given.
    previous: Option<String>,
    counts: Counts,
}

impl Plan<'_> {
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The SKU of unit `n`, unit `j` of product `i` that has `k` units.
    fn sku(&mut self, n: u64, i: u64, j: u64, k: u64) -> Option<String> {
        let c = self.common;
        let (missing, duplicate) = (c.missing_sku_every, c.duplicate_sku_every);
        let sku = if missing > 0 && n.is_multiple_of(missing) {
            None
        } else if duplicate > 0 && n.is_multiple_of(duplicate) && n > 1 {
            if self.previous.is_some() {
                self.counts.duplicated += 1;
            }
            self.previous.clone()
        } else if k == 1 {
            Some(format!("{}{i}", c.sku_prefix))
        } else {
            Some(format!("{}{i}-{j}", c.sku_prefix))
        };
        if sku.is_none() {
            self.counts.without_sku += 1;
        }
        self.previous.clone_from(&sku);
        sku
    }
}

impl Iterator for Plan<'_> {
    type Item = PlannedProduct;

    fn next(&mut self) -> Option<PlannedProduct> {
        let i = self.next_i;
        if i >= self.common.products {
            return None;
        }
        self.next_i += 1;
        self.counts.products += 1;
        let k = self.common.units_of(i);
        let mut units = Vec::with_capacity(k as usize);
        for j in 0..k {
            self.counts.units += 1;
            let n = self.counts.units;
            let sku = self.sku(n, i, j, k);
            units.push(PlannedUnit { j, n, sku });
        }
        Some(PlannedProduct { i, units })
    }
}

// ---- prices ---------------------------------------------------------------------------------------

/// An exact, non-negative decimal amount, `mantissa / 10^scale`: prices are never floats. The
/// scale is as many fraction digits as the amount keeps ("199.00" is 19900 at scale 2; a
/// MercadoLibre price drops trailing zeros first).
///
/// Read with [`Decimal::split`] and [`Decimal::from_digits`], each marketplace applying its own
/// limits; written as text (`Display`), as a JSON number through a double
/// ([`Decimal::to_json_number`], MercadoLibre) or as a JSON number with exactly its text
/// (`Serialize`, SHEIN). Shopify and TikTok Shop keep the text as given (of any length), checking
/// it with [`is_decimal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    mantissa: i64,
    scale: u32,
}

/// Decimal text as every marketplace's prices are written: digits, optionally a point and at
/// least one more digit ("19.99", "100", "0.5"); no sign, exponent or spaces.
pub fn is_decimal(text: &str) -> bool {
    Decimal::split(text).is_some()
}

impl Decimal {
    pub const fn new(mantissa: i64, scale: u32) -> Decimal {
        Decimal { mantissa, scale }
    }

    /// Decimal text (see [`is_decimal`]) split at its point: "19.99" is ("19", "99"), "100" is
    /// ("100", "").
    pub fn split(text: &str) -> Option<(&str, &str)> {
        let (int, frac) = match text.split_once('.') {
            Some((_, "")) => return None,
            Some(parts) => parts,
            None => (text, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        (!int.is_empty() && digits(int) && digits(frac)).then_some((int, frac))
    }

    /// The amount `int.frac` of two strings of digits (either may be empty); None when they are
    /// not digits or it does not fit.
    pub fn from_digits(int: &str, frac: &str) -> Option<Decimal> {
        let scale = u32::try_from(frac.len()).ok()?;
        let mut mantissa: i64 = 0;
        for c in int.chars().chain(frac.chars()) {
            let digit = i64::from(c.to_digit(10)?);
            mantissa = mantissa.checked_mul(10)?.checked_add(digit)?;
        }
        Some(Decimal { mantissa, scale })
    }

    /// How many fraction digits it keeps.
    pub fn scale(self) -> u32 {
        self.scale
    }

    pub fn is_positive(self) -> bool {
        self.mantissa > 0
    }

    /// A JSON number through a double: an integer as an integer; otherwise the text read as the
    /// nearest double, which prints back as the same text when it has at most 15 significant
    /// digits and no trailing zeros (else, the text as a JSON string).
    pub fn to_json_number(self) -> Value {
        if self.scale == 0 {
            return Value::from(self.mantissa);
        }
        let text = self.to_string();
        text.parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(text))
    }
}

/// Plain text with the fraction digits it keeps: "199.00", "0.07", "42".
impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scale == 0 {
            return write!(f, "{}", self.mantissa);
        }
        let digits = format!("{:0>width$}", self.mantissa, width = self.scale as usize + 1);
        let (int, frac) = digits.split_at(digits.len() - self.scale as usize);
        write!(f, "{int}.{frac}")
    }
}

/// A JSON number written with exactly its text (`199.00`), never through a float.
impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_json::value::RawValue::from_string(self.to_string())
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(body: Value) -> Common {
        serde_json::from_value(body).expect("common fields")
    }

    /// Every option on a catalog small enough to check by hand. 8 products, every 3rd (i = 0, 3,
    /// 6) with 3 units: 3 + 1 + 1 + 3 + 1 + 1 + 3 + 1 = 14 units, numbered
    ///
    /// ```text
    /// i0: n1 n2 n3   i1: n4   i2: n5   i3: n6 n7 n8   i4: n9   i5: n10   i6: n11 n12 n13   i7: n14
    /// ```
    ///
    /// missing every 4 → n4, n8, n12 have none; duplicate every 5 → n5 copies n4 (none: no
    /// duplicate, one more without a SKU), n10 copies n9 ("P4"). So without: n4, n5, n8, n12 = 4;
    /// duplicated: n10 = 1. Product 1 has one unit: "P1" had it not been missing.
    #[test]
    fn a_small_catalog_with_every_option() {
        let c = common(
            json!({"products": 8, "first_id": 7, "variations": 3, "variations_every": 3,
                              "sku_prefix": "P", "missing_sku_every": 4, "duplicate_sku_every": 5,
                              "price": "1.50", "stock": 2}),
        );
        assert_eq!(c.first_id_or(DEFAULT_FIRST_ID), 7);
        assert_eq!((c.price_text(), c.stock), (Ok("1.50"), 2));
        assert_eq!(c.products_with_variations(), 3);
        assert_eq!(c.units(), Some(14));
        let mut plan = c.plan();
        let products: Vec<PlannedProduct> = plan.by_ref().collect();
        let u = |j, n, sku: Option<&str>| PlannedUnit {
            j,
            n,
            sku: sku.map(str::to_string),
        };
        let p = |i, units| PlannedProduct { i, units };
        let want = vec![
            p(
                0,
                vec![u(0, 1, Some("P0-0")), u(1, 2, Some("P0-1")), u(2, 3, Some("P0-2"))],
            ),
            p(1, vec![u(0, 4, None)]),
            p(2, vec![u(0, 5, None)]),
            p(3, vec![u(0, 6, Some("P3-0")), u(1, 7, Some("P3-1")), u(2, 8, None)]),
            p(4, vec![u(0, 9, Some("P4"))]),
            p(5, vec![u(0, 10, Some("P4"))]),
            p(6, vec![u(0, 11, Some("P6-0")), u(1, 12, None), u(2, 13, Some("P6-2"))]),
            p(7, vec![u(0, 14, Some("P7"))]),
        ];
        assert_eq!(products, want);
        assert_eq!(
            plan.counts(),
            Counts {
                products: 8,
                units: 14,
                without_sku: 4,
                duplicated: 1
            }
        );
        assert_eq!(
            plan.counts().to_json(),
            json!({"products": 8, "units": 14, "without_sku": 4, "duplicated": 1})
        );
    }

    #[test]
    fn edges_of_the_rule() {
        let skus = |body: Value| -> Vec<Option<String>> {
            let c = common(body);
            c.plan().flat_map(|p| p.units).map(|u| u.sku).collect()
        };
        let s = |x: &str| Some(x.to_string());
        // every unit duplicating the previous one: unit 1 keeps its own
        assert_eq!(
            skus(json!({"products": 3, "duplicate_sku_every": 1})),
            vec![s("SKU-0"), s("SKU-0"), s("SKU-0")]
        );
        // a product "with variations" of one unit has one unit: `{prefix}{i}`
        assert_eq!(
            skus(json!({"products": 2, "variations": 1, "variations_every": 1})),
            vec![s("SKU-0"), s("SKU-1")]
        );
        // variations without variations_every (or the other way round): one unit each
        for body in [
            json!({"products": 2, "variations": 4}),
            json!({"products": 2, "variations_every": 1}),
        ] {
            assert_eq!(skus(body), vec![s("SKU-0"), s("SKU-1")]);
        }
        // a missing SKU wins over a duplicate; every unit missing
        assert_eq!(
            skus(json!({"products": 2, "missing_sku_every": 1, "duplicate_sku_every": 1})),
            vec![None, None]
        );
        let c = common(json!({"products": 0, "variations": 2, "variations_every": 1}));
        assert_eq!((c.units(), c.plan().count()), (Some(0), 0));
        let c = common(json!({"products": 3, "variations": u64::MAX, "variations_every": 1}));
        assert_eq!(c.units(), None);
    }

    /// `FIELDS` is serde's own list (which it hands to `deserialize_struct`).
    #[test]
    fn fields_are_the_structs() {
        struct Capture(&'static [&'static str]);
        impl<'de> Deserializer<'de> for &mut Capture {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(serde::de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = fields;
                Err(serde::de::Error::custom("captured"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
                ignored_any
            }
        }
        let mut c = Capture(&[]);
        assert!(Common::deserialize(&mut c).is_err());
        assert_eq!(c.0, FIELDS);
    }

    #[test]
    fn common_fields_have_defaults_and_are_read_strictly_or_leniently() {
        let c = common(json!({"products": 1}));
        assert_eq!(
            (c.first_id, c.variations, c.variations_every, c.sku_prefix.as_str()),
            (None, 0, 0, "SKU-")
        );
        assert_eq!((c.missing_sku_every, c.duplicate_sku_every), (0, 0));
        assert_eq!((c.price_text(), c.stock), (Ok("100.00"), 5));
        assert_eq!(c.first_id_or(DEFAULT_FIRST_ID), 1_000_000);
        // strictly (serde): null is no number, products is required
        for bad in [
            json!({"products": 1, "first_id": null}),
            json!({"products": 1, "variations": -1}),
            json!({"products": 1, "sku_prefix": 5}),
            json!({"first_id": 1}),
        ] {
            assert!(serde_json::from_value::<Common>(bad.clone()).is_err(), "{bad}");
        }
        // leniently: nulls are absent, other fields ignored, an error names its field
        let c =
            Common::from_lenient(&json!({"products": 2, "first_id": null, "shop": "x", "stock": 0})).expect("lenient");
        assert_eq!((c.products, c.first_id, c.stock), (2, None, 0));
        let wrong = |body: Value| Common::from_lenient(&body).map(|_| ()).unwrap_err();
        assert_eq!(
            wrong(json!({"products": 2, "variations_every": -3})),
            "variations_every"
        );
        assert_eq!(
            wrong(json!({"products": "2", "stock": 1.5, "sku_prefix": 1})),
            "products"
        );
        assert_eq!(
            wrong(json!({"products": 2, "stock": 1.5, "sku_prefix": 1})),
            "sku_prefix"
        );
        assert_eq!(wrong(json!({"products": null})), "products");
        // serde's unknown field, with the fields accepted
        assert_eq!(
            Common::name_accepted_fields("unknown field `colour` at line 1 column 9".into(), &["shop"]),
            "unknown field `colour`, expected one of `shop`, `products`, `first_id`, `variations`, \
             `variations_every`, `sku_prefix`, `missing_sku_every`, `duplicate_sku_every`, `price`, \
             `stock` at line 1 column 9"
        );
        assert_eq!(Common::name_accepted_fields("other".into(), &[]), "other");
        assert_eq!(
            Common::from_lenient(&json!({"products": 1, "price": 1.5}))
                .expect("any price")
                .price_text(),
            Err("price must be a string".to_string())
        );
    }

    #[test]
    fn decimals_are_exact() {
        for (text, parts) in [
            ("19.99", Some(("19", "99"))),
            ("100", Some(("100", ""))),
            ("0.5", Some(("0", "5"))),
            ("007.10", Some(("007", "10"))),
        ] {
            assert_eq!(Decimal::split(text), parts, "{text}");
        }
        for bad in ["", ".5", "5.", "1e3", "-1", "1,00", "NaN", "1.2.3", " 1", "+1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
        let d = |int: &str, frac: &str| Decimal::from_digits(int, frac).expect("fits");
        assert_eq!(d("199", "00"), Decimal::new(19900, 2));
        assert_eq!(d("", "07"), Decimal::new(7, 2));
        assert_eq!(d("", ""), Decimal::new(0, 0));
        assert_eq!(Decimal::from_digits("9223372036854775808", ""), None);
        assert_eq!(Decimal::from_digits("1", "x"), None);
        assert_eq!(d("199", "00").to_string(), "199.00");
        assert_eq!(d("0", "07").to_string(), "0.07");
        assert_eq!(d("042", "").to_string(), "42");
        assert_eq!(Decimal::new(0, 2).to_string(), "0.00");
        assert_eq!(d("1299", "5").to_json_number().to_string(), "1299.5");
        assert_eq!(d("100", "").to_json_number(), json!(100));
        assert_eq!(serde_json::to_string(&d("19", "90")).expect("json"), "19.90");
        assert!(d("0", "01").is_positive() && !d("0", "00").is_positive());
        assert_eq!(d("1", "250").scale(), 3);
    }
}
