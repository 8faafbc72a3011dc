//! The SHEIN catalog: a supplier's SKUs grouped as SHEIN groups them, SPU (`spuName`) → SKC
//! (`skcName`) → SKU (`skuCode`, SHEIN's id; `supplierSku`, the seller's own SKU, may be empty),
//! each SKU with its `priceInfoList`. Stock stays in [`crate::shein::Sku`], so `stock-query` and
//! `change-inventory/v2` work on every SKU listed here.
//!
//! Discovery is two signed calls, as on SHEIN:
//! - `POST /open-api/openapi-business-backend/product/query` `{"pageNum", "pageSize"}` → one
//!   `{"spuName", "skcName", "skuCodeList"}` per SKC, no total, no price, no stock: a client stops
//!   at a short page. `pageSize` is 1..=[`MAX_PAGE_SIZE`] (SHEIN documents 50 and publishes no
//!   larger bound: this sandbox refuses anything above it), `pageNum` ≥ 1.
//! - `POST /open-api/goods/spu-info` `{"languageList": ["en"], "spuName"}` → the SPU with its
//!   `skcInfoList[].skuInfoList[]{skuCode, supplierSku, priceInfoList[]}`.
//!
//! Prices are kept exact ([`Decimal`]) and written as JSON numbers with the decimal text they
//! were given (`199.00`, as SHEIN's Java backend writes a `BigDecimal`).
//!
//! `POST /_admin/shein/catalog` generates large catalogs with the rule every marketplace's
//! sandbox shares ([`crate::catalog_rule`], see [`generate`]).

use crate::catalog_rule::{Common, Decimal, DEFAULT_FIRST_ID};
use crate::shein::{envelope, verify, Shein, Sku};
use crate::shein_prices::{Cost, ShopSettings};
use crate::state::{random_token, State};
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The largest `pageSize` `product/query` accepts (the value SHEIN's documentation shows).
pub const MAX_PAGE_SIZE: i64 = 50;
/// The most units one `POST /_admin/shein/catalog` may generate.
const MAX_UNITS: u64 = 2_000_000;

/// Error code and message for an unknown SPU, or another supplier's (indistinguishable, as for
/// SKUs in `change-inventory/v2`). SHEIN publishes no code for it: decided here.
pub const SPU_NOT_FOUND: (&str, &str) = ("20401", "SPU不存在或不属于该供应商");

// ---- prices -------------------------------------------------------------------------------------

/// An amount: an exact [`Decimal`] of at most 12 integer and 4 fraction digits, keeping the
/// fraction digits it was given ("199.00"); written as a JSON number with exactly that text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Money(Decimal);

impl Money {
    /// Decimal text: digits, optionally `.` and 1–4 more digits (`"199"`, `"199.00"`, `"0.5"`).
    pub fn parse(text: &str) -> Option<Money> {
        let (int, frac) = Decimal::split(text)?;
        if int.len() > 12 || frac.len() > 4 {
            return None;
        }
        Decimal::from_digits(int, frac).map(Money)
    }

    pub fn zero(scale: u32) -> Money {
        Money(Decimal::new(0, scale))
    }

    pub fn scale(self) -> u32 {
        self.0.scale()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One entry of a SKU's `priceInfoList`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceInfo {
    pub site: String,
    pub base_price: Money,
    /// `0` when none (SHEIN resets an omitted special price to 0).
    pub special_price: Money,
    pub currency: String,
}

// ---- the catalog --------------------------------------------------------------------------------

#[derive(Default)]
pub struct Catalog {
    /// spuName -> SPU (SPU names are SHEIN-wide, not per supplier)
    pub spus: HashMap<String, Spu>,
    /// skcName -> spuName
    skc_spu: HashMap<String, String>,
    /// openKeyId -> its SKCs in listing order, as (spuName, skcName)
    listing: HashMap<String, Vec<(String, String)>>,
}

pub struct Spu {
    pub open_key_id: String,
    /// (language, name)
    pub names: Vec<(String, String)>,
    pub skcs: Vec<Skc>,
}

pub struct Skc {
    pub name: String,
    /// The seller's style code (SKC level; not a SKU).
    pub supplier_code: String,
    pub sku_codes: Vec<String>,
}

/// Where a SKU goes in the catalog.
pub struct Placement {
    pub spu_name: String,
    pub skc_name: String,
    pub supplier_code: String,
    pub names: Vec<(String, String)>,
}

impl Catalog {
    /// Why `p` cannot hold a SKU of `open_key_id`, if it cannot. SPUs and SKCs holding nothing
    /// but `replacing` (about to be taken out) do not count.
    fn check(&self, open_key_id: &str, p: &Placement, replacing: &str) -> Result<(), String> {
        if p.spu_name.is_empty() || p.skc_name.is_empty() {
            return Err("spu_name and skc_name must not be empty".into());
        }
        let only_replacing = |skc: &Skc| skc.sku_codes.iter().all(|c| c == replacing);
        if let Some(spu) = self.spus.get(&p.spu_name) {
            if spu.open_key_id != open_key_id && !spu.skcs.iter().all(only_replacing) {
                return Err(format!("SPU {} belongs to another supplier", p.spu_name));
            }
        }
        let Some(spu_name) = self.skc_spu.get(&p.skc_name) else {
            return Ok(());
        };
        let freed = self
            .spus
            .get(spu_name)
            .and_then(|s| s.skcs.iter().find(|s| s.name == p.skc_name))
            .is_none_or(only_replacing);
        if *spu_name != p.spu_name && !freed {
            return Err(format!("SKC {} belongs to SPU {spu_name}", p.skc_name));
        }
        Ok(())
    }

    /// Appends `code` to the SKC (created, with its SPU, when new). Assumes [`Self::check`] passed.
    fn add(&mut self, open_key_id: &str, p: Placement, code: String) {
        let spu = self.spus.entry(p.spu_name.clone()).or_insert_with(|| Spu {
            open_key_id: open_key_id.to_string(),
            names: p.names,
            skcs: Vec::new(),
        });
        match spu.skcs.iter_mut().find(|s| s.name == p.skc_name) {
            Some(skc) => skc.sku_codes.push(code),
            None => {
                spu.skcs.push(Skc {
                    name: p.skc_name.clone(),
                    supplier_code: p.supplier_code,
                    sku_codes: vec![code],
                });
                self.skc_spu.insert(p.skc_name.clone(), p.spu_name.clone());
                self.listing
                    .entry(open_key_id.to_string())
                    .or_default()
                    .push((p.spu_name, p.skc_name));
            }
        }
    }

    /// Takes `code` out of its SKC; an SKC (and an SPU) left empty goes away.
    fn remove(&mut self, open_key_id: &str, spu_name: &str, skc_name: &str, code: &str) {
        let Some(spu) = self.spus.get_mut(spu_name) else { return };
        let Some(at) = spu.skcs.iter().position(|s| s.name == skc_name) else {
            return;
        };
        spu.skcs[at].sku_codes.retain(|c| c != code);
        if !spu.skcs[at].sku_codes.is_empty() {
            return;
        }
        spu.skcs.remove(at);
        self.skc_spu.remove(skc_name);
        if let Some(l) = self.listing.get_mut(open_key_id) {
            l.retain(|(p, c)| !(p == spu_name && c == skc_name));
        }
        if spu.skcs.is_empty() {
            self.spus.remove(spu_name);
        }
    }

    /// The supplier's SKCs on page `page_num` (1-based) of `page_size`.
    fn page(&self, open_key_id: &str, page_num: i64, page_size: i64) -> Vec<Value> {
        let Some(all) = self.listing.get(open_key_id) else {
            return Vec::new();
        };
        let start = (page_num - 1).saturating_mul(page_size);
        let Ok(start) = usize::try_from(start) else {
            return Vec::new();
        };
        all.iter()
            .skip(start)
            .take(page_size as usize)
            .filter_map(|(spu, skc)| {
                let s = self.spus.get(spu)?.skcs.iter().find(|s| s.name == *skc)?;
                Some(json!({"spuName": spu, "skcName": skc, "skuCodeList": s.sku_codes}))
            })
            .collect()
    }
}

/// Creates or replaces SKU `code` in the stock table and the catalog (a replaced SKU leaves its
/// old SKC and is appended to `place`).
pub fn put_sku(m: &mut Shein, code: &str, sku: Sku, place: Placement) -> Result<(), String> {
    m.catalog.check(&sku.open_key_id, &place, code)?;
    if let Some(old) = m.skus.get(code) {
        let (k, p, c) = (old.open_key_id.clone(), old.spu_name.clone(), old.skc_name.clone());
        m.catalog.remove(&k, &p, &c, code);
    }
    let key = sku.open_key_id.clone();
    let sku = Sku {
        spu_name: place.spu_name.clone(),
        skc_name: place.skc_name.clone(),
        ..sku
    };
    m.catalog.add(&key, place, code.to_string());
    m.skus.insert(code.to_string(), sku);
    Ok(())
}

/// The catalog defaults of a SKU made by `POST /_admin/shein/skus` (every field overridable in its
/// body): SPU `M-{code}`, SKC `sM-{code}`, `supplierSku` = the SKU code, price `100.00` in the
/// shop's currency on its site (`shop`: the supplier's), special price 0.
pub fn admin_sku_listing(
    b: &Value,
    code: &str,
    shop: &ShopSettings,
) -> Result<(String, Vec<PriceInfo>, Placement), String> {
    let text = |k: &str| -> Result<Option<String>, String> {
        match b.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k} must be a string")),
        }
    };
    let spu_name = text("spu_name")?.unwrap_or_else(|| format!("M-{code}"));
    let skc_name = text("skc_name")?.unwrap_or_else(|| format!("s{spu_name}"));
    let supplier_sku = text("supplier_sku")?.unwrap_or_else(|| code.to_string());
    let title = text("title")?.unwrap_or_else(|| code.to_string());
    let price = price_list(
        &text("price")?.unwrap_or_else(|| "100.00".into()),
        text("special_price")?.as_deref(),
        &text("currency")?.unwrap_or_else(|| shop.currency.clone()),
        &text("site")?.unwrap_or_else(|| shop.site.clone()),
    )?;
    let place = Placement {
        spu_name,
        skc_name,
        supplier_code: String::new(),
        names: vec![("en".into(), title)],
    };
    Ok((supplier_sku, price, place))
}

fn price_list(price: &str, special: Option<&str>, currency: &str, site: &str) -> Result<Vec<PriceInfo>, String> {
    let base = Money::parse(price).ok_or_else(|| format!("price {price:?} is not decimal text like \"199.00\""))?;
    let special = match special {
        Some(s) => Money::parse(s).ok_or_else(|| format!("special_price {s:?} is not decimal text"))?,
        None => Money::zero(base.scale()),
    };
    Ok(vec![PriceInfo {
        site: site.to_string(),
        base_price: base,
        special_price: special,
        currency: currency.to_string(),
    }])
}

// ---- SHEIN endpoints ----------------------------------------------------------------------------

/// Catalog endpoints, merged into the SHEIN router.
pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route("/open-api/openapi-business-backend/product/query", post(product_query))
        .route("/open-api/goods/spu-info", post(spu_info))
}

fn param_error(msg: &str) -> Response {
    envelope("400", msg, Value::Null)
}

/// The JSON object body, or SHEIN's parameter error.
fn object(body: &Bytes) -> Result<serde_json::Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(param_error("请求参数格式错误")),
    }
}

/// `{"pageNum": p, "pageSize": s}` → `info.data[]{spuName, skcName, skuCodeList}`.
pub(crate) async fn product_query(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key_id = match verify(&state, &headers, uri.path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    state.count("shein product/query");
    let b = match object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(page_num) = b.get("pageNum").and_then(Value::as_i64) else {
        return param_error("pageNum不能为空");
    };
    let Some(page_size) = b.get("pageSize").and_then(Value::as_i64) else {
        return param_error("pageSize不能为空");
    };
    if page_num < 1 {
        return param_error("pageNum必须大于等于1");
    }
    if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
        return param_error(&format!("pageSize必须在1到{MAX_PAGE_SIZE}之间"));
    }
    let data = state.shein.lock().catalog.page(&key_id, page_num, page_size);
    envelope("0", "OK", json!({ "data": data }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpuInfoReply<'a> {
    code: &'a str,
    msg: &'a str,
    info: SpuInfo<'a>,
    trace_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SpuInfo<'a> {
    spu_name: &'a str,
    brand_code: &'a str,
    category_id: u64,
    product_type_id: u64,
    supplier_code: &'a str,
    product_multi_name_list: Vec<NameOut<'a>>,
    skc_info_list: Vec<SkcOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NameOut<'a> {
    language: &'a str,
    product_name: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SkcOut<'a> {
    skc_name: &'a str,
    supplier_code: &'a str,
    sku_info_list: Vec<SkuOut<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SkuOut<'a> {
    sku_code: &'a str,
    supplier_sku: &'a str,
    mall_state: u8,
    price_info_list: &'a [PriceInfo],
    /// A managed shop's supply cost, once `update-cost` set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_info: Option<&'a Cost>,
}

/// `{"languageList": ["en"], "spuName"}` → the SPU, its SKCs and SKUs with prices.
pub(crate) async fn spu_info(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key_id = match verify(&state, &headers, uri.path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    state.count("shein spu-info");
    let b = match object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(spu_name) = b.get("spuName").and_then(Value::as_str).filter(|s| !s.is_empty()) else {
        return param_error("spuName不能为空");
    };
    let languages: Vec<&str> = match b.get("languageList").and_then(Value::as_array) {
        Some(l) if !l.is_empty() && l.iter().all(Value::is_string) => l.iter().filter_map(Value::as_str).collect(),
        _ => return param_error("languageList不能为空"),
    };
    let m = state.shein.lock();
    let Some(spu) = m.catalog.spus.get(spu_name).filter(|s| s.open_key_id == key_id) else {
        return envelope(SPU_NOT_FOUND.0, SPU_NOT_FOUND.1, Value::Null);
    };
    let skc_info_list = spu
        .skcs
        .iter()
        .map(|skc| SkcOut {
            skc_name: &skc.name,
            supplier_code: &skc.supplier_code,
            sku_info_list: skc
                .sku_codes
                .iter()
                .filter_map(|c| m.skus.get(c).map(|s| (c, s)))
                .map(|(c, s)| SkuOut {
                    sku_code: c,
                    supplier_sku: &s.supplier_sku,
                    mall_state: 1,
                    price_info_list: &s.prices,
                    cost_info: s.cost.as_ref(),
                })
                .collect(),
        })
        .collect();
    let reply = SpuInfoReply {
        code: "0",
        msg: "OK",
        info: SpuInfo {
            spu_name,
            brand_code: "",
            category_id: 12_345,
            product_type_id: 6_789,
            supplier_code: "",
            product_multi_name_list: spu
                .names
                .iter()
                .filter(|(lang, _)| languages.contains(&lang.as_str()))
                .map(|(language, product_name)| NameOut { language, product_name })
                .collect(),
            skc_info_list,
        },
        trace_id: random_token(""),
    };
    Json(reply).into_response()
}

// ---- admin (/_admin/shein/catalog) --------------------------------------------------------------

/// Admin endpoints (under /_admin/shein) that build catalogs.
pub fn admin_router() -> Router<Arc<State>> {
    Router::new().route("/catalog", post(admin_catalog))
}

fn default_warehouse() -> String {
    "WH-1".into()
}

/// The body of `POST /_admin/shein/catalog`: the fields every marketplace's generator takes
/// ([`Common`]) and SHEIN's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub open_key_id: String,
    #[serde(flatten)]
    pub common: Common,
    #[serde(default)]
    pub special_price: Option<String>,
    /// The prices' currency and site; without them the supplier's (see
    /// [`crate::shein_prices::ShopSettings`]), with them they become the supplier's.
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default = "default_warehouse")]
    pub warehouse_code: String,
}

impl Spec {
    /// Its fields besides the common ones.
    const OWN_FIELDS: &[&str] = &["open_key_id", "special_price", "currency", "site", "warehouse_code"];
}

/// Builds the catalog by the shared rule ([`crate::catalog_rule`]), the unit's SKU being its
/// `supplierSku` ("" when none). Product `i` is one SPU `M{first_id+i}` with one SKC
/// `sM{first_id+i}` (`supplierCode` `{prefix}{i}`); its unit `j` is `skuCode` `I{first_id+i}-{j}`.
pub fn generate(m: &mut Shein, spec: &Spec) -> Result<Value, String> {
    let c = &spec.common;
    let Some(supplier) = m.suppliers.get(&spec.open_key_id) else {
        return Err("unknown open_key_id".into());
    };
    let shop = ShopSettings {
        site: spec.site.clone().unwrap_or_else(|| supplier.shop.site.clone()),
        currency: spec.currency.clone().unwrap_or_else(|| supplier.shop.currency.clone()),
        ..supplier.shop.clone()
    };
    if shop.site.is_empty() || shop.currency.is_empty() {
        return Err("site and currency must not be empty".into());
    }
    if c.stock < 0 {
        return Err("stock must not be negative".into());
    }
    // decimal text; worded by serde, as when it was a field of its own
    let price = String::deserialize(&c.price).map_err(|e| e.to_string())?;
    let prices = price_list(&price, spec.special_price.as_deref(), &shop.currency, &shop.site)?;
    let units = c
        .units()
        .filter(|u| *u <= MAX_UNITS)
        .ok_or_else(|| format!("at most {MAX_UNITS} units per call"))?;
    let first_id = c.first_id_or(DEFAULT_FIRST_ID);
    let next_first_id = first_id
        .checked_add(c.products)
        .ok_or("first_id + products overflows")?;
    // refuse, before changing anything, names already taken
    for i in 0..c.products {
        let id = first_id + i;
        let spu = format!("M{id}");
        if m.catalog.spus.contains_key(&spu) || m.catalog.skc_spu.contains_key(&format!("s{spu}")) {
            return Err(format!("SPU {spu} already exists: choose another first_id"));
        }
        if let Some(code) = (0..c.units_of(i))
            .map(|j| format!("I{id}-{j}"))
            .find(|code| m.skus.contains_key(code))
        {
            return Err(format!("SKU {code} already exists: choose another first_id"));
        }
    }
    if let Some(s) = m.suppliers.get_mut(&spec.open_key_id) {
        s.shop = shop;
    }
    m.skus.reserve(units as usize);
    m.catalog.spus.reserve(c.products as usize);
    m.catalog.skc_spu.reserve(c.products as usize);
    let mut plan = c.plan();
    for p in plan.by_ref() {
        let id = first_id + p.i;
        let spu_name = format!("M{id}");
        let skc_name = format!("s{spu_name}");
        let mut codes = Vec::with_capacity(p.units.len());
        for u in p.units {
            let code = format!("I{id}-{}", u.j);
            m.skus.insert(
                code.clone(),
                Sku {
                    open_key_id: spec.open_key_id.clone(),
                    warehouse_code: spec.warehouse_code.clone(),
                    quantity: c.stock,
                    spu_name: spu_name.clone(),
                    skc_name: skc_name.clone(),
                    supplier_sku: u.sku.unwrap_or_default(),
                    prices: prices.clone(),
                    ..Default::default()
                },
            );
            codes.push(code);
        }
        m.catalog.skc_spu.insert(skc_name.clone(), spu_name.clone());
        m.catalog
            .listing
            .entry(spec.open_key_id.clone())
            .or_default()
            .push((spu_name.clone(), skc_name.clone()));
        m.catalog.spus.insert(
            spu_name.clone(),
            Spu {
                open_key_id: spec.open_key_id.clone(),
                names: vec![
                    ("en".into(), format!("Product {spu_name}")),
                    ("es".into(), format!("Producto {spu_name}")),
                ],
                skcs: vec![Skc {
                    name: skc_name,
                    supplier_code: format!("{}{}", c.sku_prefix, p.i),
                    sku_codes: codes,
                }],
            },
        );
    }
    let mut out = plan.counts().to_json();
    out["next_first_id"] = json!(next_first_id);
    Ok(out)
}

async fn admin_catalog(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let spec: Spec = match serde_json::from_value(b) {
        Ok(s) => s,
        Err(e) => {
            let e = Common::name_accepted_fields(e.to_string(), Spec::OWN_FIELDS);
            return (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response();
        }
    };
    let result = generate(&mut state.shein.lock(), &spec);
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shein::{change_inventory, stock_query};
    use std::collections::HashSet;

    const QUERY: &str = "/open-api/openapi-business-backend/product/query";
    const SPU_INFO: &str = "/open-api/goods/spu-info";

    /// A state with one app; suppliers are added with [`supplier`].
    fn setup() -> Arc<State> {
        let state = Arc::new(State::default());
        state
            .shein
            .lock()
            .apps
            .insert("app1".into(), "698E4F20DFBA4B85B2291C2BCB7381C5".into());
        state
    }

    /// (openKeyId, secretKey)
    fn supplier(state: &State, id: u64) -> (String, String) {
        let s = state.shein.lock().add_supplier("app1", id, "st");
        let field = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        (field("open_key_id"), field("secret_key"))
    }

    use crate::shein::tests::signed;

    async fn text(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    async fn json_of(r: Response) -> Value {
        serde_json::from_str(&text(r).await).unwrap()
    }

    fn gen(state: &State, body: Value) -> Result<Value, String> {
        let spec: Spec = serde_json::from_value(body).map_err(|e| e.to_string())?;
        generate(&mut state.shein.lock(), &spec)
    }

    async fn query(state: &Arc<State>, key: &(String, String), body: Value) -> Value {
        let r = product_query(
            AxState(state.clone()),
            QUERY.parse().unwrap(),
            signed(&key.0, &key.1, QUERY),
            Bytes::from(body.to_string()),
        )
        .await;
        assert_eq!(r.status(), 200);
        json_of(r).await
    }

    async fn spu(state: &Arc<State>, key: &(String, String), body: Value) -> Response {
        spu_info(
            AxState(state.clone()),
            SPU_INFO.parse().unwrap(),
            signed(&key.0, &key.1, SPU_INFO),
            Bytes::from(body.to_string()),
        )
        .await
    }

    #[test]
    fn money_is_exact_decimal_text() {
        let text = |s: &str| Money::parse(s).map(|m| m.to_string());
        assert_eq!(text("199.00").as_deref(), Some("199.00"));
        assert_eq!(text("0199.5").as_deref(), Some("199.5"));
        assert_eq!(text("0.07").as_deref(), Some("0.07"));
        assert_eq!(text("42").as_deref(), Some("42"));
        assert_eq!(text("999999999999.9999").as_deref(), Some("999999999999.9999"));
        for bad in [
            "",
            "1.",
            ".5",
            "-1",
            "1e3",
            "1.23456",
            "1,00",
            "1234567890123",
            " 1",
            "NaN",
        ] {
            assert_eq!(text(bad), None, "{bad:?}");
        }
        let v = serde_json::to_string(&Money::parse("19.90").unwrap()).unwrap();
        assert_eq!(v, "19.90");
    }

    #[tokio::test]
    async fn product_query_pages_every_skc_once() {
        let state = setup();
        let a = supplier(&state, 1);
        let b = supplier(&state, 2);
        let r = gen(
            &state,
            json!({"open_key_id": a.0, "products": 333, "variations": 3, "variations_every": 7}),
        )
        .unwrap();
        assert_eq!(r["units"], 333 + 48 * 2);
        // another supplier's catalog is not listed to A
        gen(
            &state,
            json!({"open_key_id": b.0, "products": 10, "first_id": 5_000_000}),
        )
        .unwrap();

        let mut seen = HashSet::new();
        let mut units = 0;
        let mut pages = 0;
        for page in 1.. {
            let r = query(&state, &a, json!({"pageNum": page, "pageSize": 50})).await;
            assert_eq!(r["code"], "0");
            let data = r["info"]["data"].as_array().unwrap().clone();
            pages += 1;
            for e in &data {
                let (spu, skc) = (e["spuName"].as_str().unwrap(), e["skcName"].as_str().unwrap());
                assert!(spu.starts_with('M') && !spu.starts_with("M5"), "{spu}");
                assert_eq!(skc, format!("s{spu}"));
                assert!(seen.insert(skc.to_string()), "{skc} listed twice");
                let codes = e["skuCodeList"].as_array().unwrap();
                units += codes.len();
                assert_eq!(codes[0], format!("I{}-0", &spu[1..]));
                // no total, no price, no stock
                assert_eq!(e.as_object().unwrap().len(), 3);
            }
            assert!(r["info"].get("total").is_none());
            if data.len() < 50 {
                assert_eq!(data.len(), 33, "the short last page");
                break;
            }
        }
        assert_eq!((pages, seen.len(), units), (7, 333, 333 + 48 * 2));
        // past the end: an empty page
        let r = query(&state, &a, json!({"pageNum": 8, "pageSize": 50})).await;
        assert_eq!(r["info"]["data"], json!([]));
        assert_eq!(state.counters.lock()["shein product/query"], 8);
    }

    #[tokio::test]
    async fn page_bounds_are_refused() {
        let state = setup();
        let a = supplier(&state, 1);
        gen(&state, json!({"open_key_id": a.0, "products": 60})).unwrap();
        let over = query(&state, &a, json!({"pageNum": 1, "pageSize": MAX_PAGE_SIZE + 1})).await;
        assert_eq!(over["code"], "400");
        assert_eq!(over["msg"], "pageSize必须在1到50之间");
        assert!(over["info"].is_null());
        for bad in [
            json!({"pageNum": 0, "pageSize": 10}),
            json!({"pageNum": -1, "pageSize": 10}),
            json!({"pageNum": 1, "pageSize": 0}),
            json!({"pageNum": 1}),
            json!({"pageSize": 10}),
            json!({"pageNum": "1", "pageSize": 10}),
            json!([1, 2]),
        ] {
            assert_eq!(query(&state, &a, bad.clone()).await["code"], "400", "{bad}");
        }
        // not JSON at all
        let r = product_query(
            AxState(state.clone()),
            QUERY.parse().unwrap(),
            signed(&a.0, &a.1, QUERY),
            Bytes::from_static(b"{pageNum"),
        )
        .await;
        assert_eq!(json_of(r).await["code"], "400");
        let full = query(&state, &a, json!({"pageNum": 1, "pageSize": MAX_PAGE_SIZE})).await;
        assert_eq!(full["info"]["data"].as_array().unwrap().len(), 50);
    }

    #[tokio::test]
    async fn bad_signatures_are_refused() {
        let state = setup();
        let a = supplier(&state, 1);
        gen(&state, json!({"open_key_id": a.0, "products": 3})).unwrap();
        let body = || Bytes::from(json!({"pageNum": 1, "pageSize": 10}).to_string());
        for headers in [
            signed(&a.0, "WRONG-SECRET", QUERY),
            signed(&a.0, &a.1, SPU_INFO), // signed over another path
            signed("UNKNOWN", &a.1, QUERY),
            HeaderMap::new(),
        ] {
            let r = product_query(AxState(state.clone()), QUERY.parse().unwrap(), headers, body()).await;
            assert_eq!(r.status(), 200);
            let r = json_of(r).await;
            assert_eq!(r["code"], "openapi00001");
            assert_eq!(r["msg"], "签名错误:生成的签名不正确");
        }
        let r = spu_info(
            AxState(state.clone()),
            SPU_INFO.parse().unwrap(),
            signed(&a.0, "WRONG-SECRET", SPU_INFO),
            Bytes::from(json!({"languageList": ["en"], "spuName": "M1000000"}).to_string()),
        )
        .await;
        assert_eq!(json_of(r).await["code"], "openapi00001");
        let counters = state.counters.lock();
        assert_eq!(counters["shein bad signature"], 5);
        assert!(!counters.contains_key("shein product/query"));
    }

    #[tokio::test]
    async fn spu_info_has_exact_prices_and_supplier_skus() {
        let state = setup();
        let a = supplier(&state, 1);
        gen(
            &state,
            json!({"open_key_id": a.0, "products": 4, "variations": 2, "variations_every": 2, "sku_prefix": "P",
                   "price": "199.90", "special_price": "149.5", "currency": "MXN", "site": "shein-mx"}),
        )
        .unwrap();
        let r = spu(&state, &a, json!({"languageList": ["en"], "spuName": "M1000000"})).await;
        let raw = text(r).await;
        // JSON numbers carrying the exact decimal text
        assert!(raw.contains(r#""basePrice":199.90"#), "{raw}");
        assert!(raw.contains(r#""specialPrice":149.5"#), "{raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["code"], "0");
        let info = &v["info"];
        assert_eq!(info["spuName"], "M1000000");
        assert_eq!(
            info["productMultiNameList"],
            json!([{"language": "en", "productName": "Product M1000000"}])
        );
        let skcs = info["skcInfoList"].as_array().unwrap();
        assert_eq!(skcs.len(), 1);
        assert_eq!(skcs[0]["skcName"], "sM1000000");
        let skus = skcs[0]["skuInfoList"].as_array().unwrap();
        let pairs: Vec<(&str, &str)> = skus
            .iter()
            .map(|s| (s["skuCode"].as_str().unwrap(), s["supplierSku"].as_str().unwrap()))
            .collect();
        assert_eq!(pairs, [("I1000000-0", "P0-0"), ("I1000000-1", "P0-1")]);
        let price = &skus[0]["priceInfoList"][0];
        assert_eq!(price["site"], "shein-mx");
        assert_eq!(price["currency"], "MXN");
        assert!(price["basePrice"].is_number() && price["specialPrice"].is_number());

        // a one-SKU product; without special_price it is 0 at the price's scale
        gen(
            &state,
            json!({"open_key_id": a.0, "products": 1, "first_id": 7, "price": "23"}),
        )
        .unwrap();
        let raw = text(spu(&state, &a, json!({"languageList": ["en", "es"], "spuName": "M7"})).await).await;
        assert!(raw.contains(r#""basePrice":23,"specialPrice":0,"#), "{raw}");
        let v: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(v["info"]["productMultiNameList"].as_array().unwrap().len(), 2);
        assert_eq!(v["info"]["skcInfoList"][0]["skuInfoList"][0]["supplierSku"], "SKU-0");
        assert_eq!(v["info"]["skcInfoList"][0]["skuInfoList"][0]["skuCode"], "I7-0");
        assert_eq!(state.counters.lock()["shein spu-info"], 2);
    }

    #[tokio::test]
    async fn another_suppliers_or_unknown_spu_is_refused() {
        let state = setup();
        let a = supplier(&state, 1);
        let b = supplier(&state, 2);
        gen(&state, json!({"open_key_id": b.0, "products": 2})).unwrap();
        for name in ["M1000000", "M999"] {
            let r = json_of(spu(&state, &a, json!({"languageList": ["en"], "spuName": name})).await).await;
            assert_eq!(r["code"], SPU_NOT_FOUND.0);
            assert_eq!(r["msg"], SPU_NOT_FOUND.1);
            assert!(r["info"].is_null());
        }
        // the owner reads it
        let r = json_of(spu(&state, &b, json!({"languageList": ["en"], "spuName": "M1000000"})).await).await;
        assert_eq!(r["code"], "0");
        for bad in [
            json!({"spuName": "M1000000"}),
            json!({"languageList": [], "spuName": "M1000000"}),
            json!({"languageList": [1], "spuName": "M1000000"}),
            json!({"languageList": ["en"]}),
            json!({"languageList": ["en"], "spuName": 5}),
        ] {
            let r = json_of(spu(&state, &b, bad.clone()).await).await;
            assert_eq!(r["code"], "400", "{bad}");
        }
    }

    /// The supplierSku of every unit, in unit order.
    fn supplier_skus(state: &State, key: &str) -> Vec<String> {
        let m = state.shein.lock();
        m.catalog.listing[key]
            .iter()
            .flat_map(|(spu, _)| m.catalog.spus[spu].skcs[0].sku_codes.iter())
            .map(|c| m.skus[c].supplier_sku.clone())
            .collect()
    }

    #[test]
    fn generator_counts_with_every_option() {
        let state = setup();
        let a = supplier(&state, 1);
        let r = gen(
            &state,
            json!({"open_key_id": a.0, "products": 10, "variations": 3, "variations_every": 4, "sku_prefix": "P",
                   "missing_sku_every": 5, "duplicate_sku_every": 4, "stock": 9, "warehouse_code": "WH-9"}),
        )
        .unwrap();
        assert_eq!(
            r,
            json!({"products": 10, "units": 16, "without_sku": 4, "duplicated": 3, "next_first_id": 1_000_010})
        );
        // unit 16 duplicates unit 15, which has none: it has none either
        let want = [
            "P0-0", "P0-1", "P0-2", "P0-2", "", "P3", "P4-0", "P4-0", "P4-2", "", "P6", "P6", "P8-0", "P8-1", "", "",
        ];
        assert_eq!(supplier_skus(&state, &a.0), want);
        let m = state.shein.lock();
        let s = &m.skus["I1000004-2"];
        assert_eq!(
            (s.quantity, s.warehouse_code.as_str(), s.supplier_sku.as_str()),
            (9, "WH-9", "P4-2")
        );
        assert_eq!(m.catalog.spus["M1000009"].skcs[0].supplier_code, "P9");
        drop(m);

        // a large catalog, fast; counts by the rule
        let t = std::time::Instant::now();
        let r = gen(
            &state,
            json!({"open_key_id": a.0, "products": 10_000, "first_id": 2_000_000, "variations": 3,
                   "variations_every": 10, "missing_sku_every": 7, "duplicate_sku_every": 11}),
        )
        .unwrap();
        assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
        let units = 10_000 + 1_000 * 2;
        let missing = (1..=units).filter(|n| n % 7 == 0).count();
        let dup_of_missing = (2..=units)
            .filter(|n| n % 7 != 0 && n % 11 == 0 && (n - 1) % 7 == 0)
            .count();
        let dups = (2..=units)
            .filter(|n| n % 7 != 0 && n % 11 == 0 && (n - 1) % 7 != 0)
            .count();
        assert_eq!(r["units"], units);
        assert_eq!(r["without_sku"], missing + dup_of_missing);
        assert_eq!(r["duplicated"], dups);
        let all = supplier_skus(&state, &a.0);
        assert_eq!(all.len(), 16 + units);
        assert_eq!(
            all.iter().filter(|s| s.is_empty()).count(),
            4 + missing + dup_of_missing
        );

        // defaults: one SKU per product, "SKU-{i}", 5 in stock at WH-1, price 100.00 MXN shein-mx
        let r = gen(&state, json!({"open_key_id": a.0, "products": 2, "first_id": 1})).unwrap();
        assert_eq!((r["units"].as_u64(), r["without_sku"].as_u64()), (Some(2), Some(0)));
        let m = state.shein.lock();
        let s = &m.skus["I2-0"];
        assert_eq!(
            (s.supplier_sku.as_str(), s.quantity, s.warehouse_code.as_str()),
            ("SKU-1", 5, "WH-1")
        );
        assert_eq!(s.prices[0].base_price.to_string(), "100.00");
        assert_eq!(
            (s.prices[0].currency.as_str(), s.prices[0].site.as_str()),
            ("MXN", "shein-mx")
        );
        drop(m);

        // every unit duplicating the previous one: unit 1 keeps its own
        let r = gen(
            &state,
            json!({"open_key_id": a.0, "products": 4, "first_id": 10, "duplicate_sku_every": 1}),
        )
        .unwrap();
        assert_eq!(
            (r["without_sku"].as_u64(), r["duplicated"].as_u64()),
            (Some(0), Some(3))
        );

        // refused: names taken, unknown supplier, bad price, unknown field, too many units
        for bad in [
            json!({"open_key_id": a.0, "products": 1, "first_id": 2_000_005}),
            json!({"open_key_id": "NOPE", "products": 1, "first_id": 1}),
            json!({"open_key_id": a.0, "products": 1, "first_id": 90, "price": "1.999.0"}),
            json!({"open_key_id": a.0, "products": 1, "first_id": 90, "price": 199.0}),
            json!({"open_key_id": a.0, "products": 1, "first_id": 90, "colour": "red"}),
            json!({"open_key_id": a.0, "products": 3_000_000, "first_id": 90}),
            json!({"open_key_id": a.0, "products": 1, "first_id": u64::MAX}),
        ] {
            assert!(gen(&state, bad.clone()).is_err(), "{bad}");
        }
        // nothing of the refused calls was kept
        assert!(!state.shein.lock().skus.contains_key("I90-0"));
    }

    #[tokio::test]
    async fn admin_catalog_answers_counts_or_400() {
        let state = setup();
        let a = supplier(&state, 1);
        let ok = admin_catalog(AxState(state.clone()), Json(json!({"open_key_id": a.0, "products": 3}))).await;
        assert_eq!(ok.status(), 200);
        assert_eq!(json_of(ok).await["units"], 3);
        let bad = admin_catalog(AxState(state.clone()), Json(json!({"open_key_id": a.0}))).await;
        assert_eq!(bad.status(), 400);
        assert!(json_of(bad).await["error"].is_string());
    }

    #[tokio::test]
    async fn generated_sku_stock_is_readable_and_changeable() {
        let state = setup();
        let a = supplier(&state, 1);
        let b = supplier(&state, 2);
        gen(&state, json!({"open_key_id": a.0, "products": 2, "stock": 7})).unwrap();
        let read = || async {
            let p = "/open-api/stock/stock-query";
            let r = stock_query(
                AxState(state.clone()),
                p.parse().unwrap(),
                signed(&a.0, &a.1, p),
                Json(json!({"skuCodeList": ["I1000001-0"], "invType": "VI"})),
            )
            .await;
            json_of(r).await["info"][0]["goodsInventory"][0]["skuList"][0].clone()
        };
        let sku = read().await;
        assert_eq!(
            (sku["totalUsableInventory"].as_i64(), sku["skuCode"].as_str()),
            (Some(7), Some("I1000001-0"))
        );
        assert_eq!(sku["warehouseInventoryList"][0]["warehouseCode"], "WH-1");

        let p = "/open-api/stock/change-inventory/v2";
        let change = |key: &(String, String), idem: &str, qty: i64| {
            let body = json!({"updateSkuInventoryQuantityRequests": [{"idempotencyKey": idem, "skuCode": "I1000001-0",
                "invType": "VI", "changeType": "OVERWRITE", "changeQuantity": qty, "warehouseCode": "WH-1"}]});
            change_inventory(
                AxState(state.clone()),
                p.parse().unwrap(),
                signed(&key.0, &key.1, p),
                Json(body),
            )
        };
        let r = json_of(change(&a, "k1", 42).await).await;
        assert_eq!(r["code"], "0");
        assert_eq!(r["info"]["failedList"], json!([]));
        assert_eq!(read().await["totalUsableInventory"], 42);
        // another supplier cannot touch it
        let r = json_of(change(&b, "k2", 1).await).await;
        assert_eq!(r["info"]["failedList"][0]["reason"], "SKU不存在或不属于该供应商");
        assert_eq!(read().await["totalUsableInventory"], 42);
    }

    #[tokio::test]
    async fn admin_skus_get_catalog_defaults() {
        let state = setup();
        let a = supplier(&state, 1);
        let put = |code: &str, body: Value| {
            let (supplier_sku, prices, place) = admin_sku_listing(&body, code, &ShopSettings::default())?;
            let sku = Sku {
                open_key_id: a.0.clone(),
                warehouse_code: "WH-1".into(),
                supplier_sku,
                prices,
                ..Default::default()
            };
            put_sku(&mut state.shein.lock(), code, sku, place)
        };
        put("SKU-1", json!({})).unwrap();
        put(
            "SKU-2",
            json!({"spu_name": "MX1", "skc_name": "sMX1", "supplier_sku": "", "price": "5.5"}),
        )
        .unwrap();
        put("SKU-3", json!({"spu_name": "MX1", "skc_name": "sMX1"})).unwrap();
        assert!(put("SKU-4", json!({"price": "abc"})).is_err());
        assert!(put("SKU-4", json!({"spu_name": "MX2", "skc_name": "sMX1"})).is_err());
        let page = query(&state, &a, json!({"pageNum": 1, "pageSize": 50})).await;
        assert_eq!(
            page["info"]["data"],
            json!([{"spuName": "M-SKU-1", "skcName": "sM-SKU-1", "skuCodeList": ["SKU-1"]},
                   {"spuName": "MX1", "skcName": "sMX1", "skuCodeList": ["SKU-2", "SKU-3"]}])
        );
        let raw = text(spu(&state, &a, json!({"languageList": ["en"], "spuName": "M-SKU-1"})).await).await;
        assert!(raw.contains(r#""skuCode":"SKU-1","supplierSku":"SKU-1""#), "{raw}");
        assert!(
            raw.contains(r#""basePrice":100.00,"specialPrice":0.00,"currency":"MXN""#),
            "{raw}"
        );
        // another supplier cannot put a SKU into A's SPU
        let b = supplier(&state, 2);
        let (s, p, place) = admin_sku_listing(&json!({"spu_name": "MX1"}), "SKU-9", &ShopSettings::default()).unwrap();
        let sku = Sku {
            open_key_id: b.0.clone(),
            supplier_sku: s,
            prices: p,
            ..Default::default()
        };
        assert!(put_sku(&mut state.shein.lock(), "SKU-9", sku, place).is_err());
        // re-created for another supplier (as before the catalog existed): it moves with its SPU
        let (s, p, place) = admin_sku_listing(&json!({}), "SKU-1", &ShopSettings::default()).unwrap();
        let sku = Sku {
            open_key_id: b.0.clone(),
            supplier_sku: s,
            prices: p,
            ..Default::default()
        };
        put_sku(&mut state.shein.lock(), "SKU-1", sku, place).unwrap();
        let page = query(&state, &b, json!({"pageNum": 1, "pageSize": 50})).await;
        assert_eq!(page["info"]["data"][0]["skuCodeList"], json!(["SKU-1"]));
        let page = query(&state, &a, json!({"pageNum": 1, "pageSize": 50})).await;
        assert_eq!(page["info"]["data"].as_array().unwrap().len(), 1);
        // a replaced SKU moves: its old SKC goes away when left empty
        put("SKU-1", json!({"spu_name": "MX1", "skc_name": "sMX1"})).unwrap();
        let page = query(&state, &a, json!({"pageNum": 1, "pageSize": 50})).await;
        assert_eq!(
            page["info"]["data"],
            json!([{"spuName": "MX1", "skcName": "sMX1", "skuCodeList": ["SKU-2", "SKU-3", "SKU-1"]}])
        );
    }
}
