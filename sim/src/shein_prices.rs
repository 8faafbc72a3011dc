//! SHEIN prices, signed like every SHEIN call ([`verify`]) and answered in SHEIN's envelope.
//!
//! A supplier's shop has a mode ([`ShopMode`]), a site and a currency ([`ShopSettings`], default
//! `self_operated`, `shein-mx`, `MXN`; set by `POST /_admin/shein/suppliers`, by
//! `POST /_admin/shein/catalog` when it names a `site` / `currency`, or by
//! `POST /_admin/shein/suppliers/{open_key_id}`).
//!
//! - Self-operated shops set the selling price:
//!   `POST /open-api/openapi-business-backend/product/price/save`
//!   `{"productPriceList": [{"productCode": "<skuCode>", "currencyCode": "MXN", "site": "shein-mx",
//!   "shopPrice": 23.0, "specialPrice": 19.0}]}`, 1–[`MAX_PRICE_ENTRIES`] entries (else code `400`)
//!   → `info.data[]{success, message, productCode}`, one per entry, in order: each entry stands
//!   alone even when `code` is `"0"`. The stored price is the SKU's `priceInfoList` entry for the
//!   site, the one `spu-info` serves. **An entry without `specialPrice` (or with `null`) resets it
//!   to 0**, as SHEIN does. Entries are applied in order (a code twice: the last one stays).
//! - Semi- and fully-managed shops set a supply cost instead: `POST /open-api/goods/update-cost`,
//!   see [`update_cost`] for the shape decided here.
//!
//! Each endpoint refuses the other kind of shop as a whole (not published; codes decided here:
//! [`MANAGED_SHOP`], [`SELF_OPERATED_SHOP`]).
//!
//! Amounts are JSON numbers read from their raw text (never through a float) into a
//! [`Decimal`]; a JSON string is refused. At most 2 significant fraction digits (`23.000` is
//! `23.00`); stored at 2 decimals (`23` reads back `23.00`), as SHEIN's backend keeps money.

use crate::shein::{envelope, verify, Sku};
use crate::shein_catalog::{Money, PriceInfo, SPU_NOT_FOUND};
use crate::state::State;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The most entries one `price/save` takes [doc].
pub const MAX_PRICE_ENTRIES: usize = 100;
/// The most SKUs one `update-cost` takes, over all its SKCs (not published: decided here, as
/// SHEIN's other batch writes).
pub const MAX_COST_SKUS: usize = 100;
/// A cost must be below this [doc].
const COST_CEILING: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);
/// `price/save` from a semi- or fully-managed shop (decided here).
pub const MANAGED_SHOP: (&str, &str) = ("20501", "半托管/全托管店铺不能修改售价,请使用供货价接口update-cost");
/// `update-cost` from a self-operated shop (decided here).
pub const SELF_OPERATED_SHOP: (&str, &str) = ("20502", "自运营店铺不能修改供货价,请使用售价接口price/save");

// ---- shop settings ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShopMode {
    #[default]
    SelfOperated,
    SemiManaged,
    FullyManaged,
}

impl ShopMode {
    pub fn parse(s: &str) -> Option<ShopMode> {
        match s {
            "self_operated" => Some(ShopMode::SelfOperated),
            "semi_managed" => Some(ShopMode::SemiManaged),
            "fully_managed" => Some(ShopMode::FullyManaged),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShopMode::SelfOperated => "self_operated",
            ShopMode::SemiManaged => "semi_managed",
            ShopMode::FullyManaged => "fully_managed",
        }
    }
}

/// What a supplier's price writes must name, and which endpoint it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopSettings {
    pub mode: ShopMode,
    pub site: String,
    pub currency: String,
}

impl Default for ShopSettings {
    fn default() -> Self {
        ShopSettings {
            mode: ShopMode::SelfOperated,
            site: "shein-mx".into(),
            currency: "MXN".into(),
        }
    }
}

impl ShopSettings {
    /// `self` with the admin body's `mode`, `site`, `currency` (each optional).
    pub fn with_admin_fields(&self, b: &Value) -> Result<ShopSettings, String> {
        let text = |k: &str| match b.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("{k} must be a non-empty string")),
        };
        let mut out = self.clone();
        if let Some(m) = text("mode")? {
            out.mode = ShopMode::parse(&m).ok_or("mode must be self_operated, semi_managed or fully_managed")?;
        }
        out.site = text("site")?.unwrap_or(out.site);
        out.currency = text("currency")?.unwrap_or(out.currency);
        Ok(out)
    }

    pub fn to_json(&self) -> Value {
        json!({"mode": self.mode.as_str(), "site": self.site, "currency": self.currency})
    }
}

/// A SKU's supply cost (managed shops), served by `spu-info` as `costInfo` when set (the field
/// name is decided here: SHEIN publishes none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cost {
    pub cost_price: Money,
    pub currency: String,
}

// ---- reading amounts and fields -----------------------------------------------------------------

type Fields<'a> = BTreeMap<String, &'a RawValue>;

fn fields(raw: &RawValue) -> Option<Fields<'_>> {
    serde_json::from_str(raw.get()).ok()
}

fn list<'a>(f: &Fields<'a>, key: &str) -> Option<Vec<&'a RawValue>> {
    serde_json::from_str(f.get(key)?.get()).ok()
}

/// A string field; `None` when absent or not a string.
fn text(f: &Fields<'_>, key: &str) -> Option<String> {
    serde_json::from_str(f.get(key)?.get()).ok()
}

/// A JSON number field, exactly: `Ok(None)` when absent or null, `Err` with SHEIN's message when
/// not a number or more than 2 significant decimals.
fn amount(f: &Fields<'_>, key: &str) -> Result<Option<Decimal>, String> {
    let Some(raw) = f.get(key).map(|r| r.get()).filter(|t| *t != "null") else {
        return Ok(None);
    };
    let is_number = raw.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    let parsed = if raw.contains(['e', 'E']) {
        Decimal::from_scientific(raw)
    } else {
        Decimal::from_str_exact(raw)
    };
    let d = parsed
        .ok()
        .filter(|_| is_number)
        .ok_or_else(|| format!("{key}格式错误"))?;
    if d.normalize().scale() > 2 {
        return Err(format!("{key}最多保留2位小数"));
    }
    Ok(Some(d))
}

/// A checked amount as stored: 2 decimals.
fn money(mut d: Decimal, key: &str) -> Result<Money, String> {
    d.rescale(2);
    Money::parse(&d.to_string()).ok_or_else(|| format!("{key}超出范围"))
}

/// An entry's `success` and `message`; a success counted under `counter`.
fn outcome(state: &State, counter: &str, result: Result<(), String>) -> (bool, String) {
    match result {
        Ok(()) => {
            state.count(counter);
            (true, "成功".into())
        }
        Err(e) => (false, e),
    }
}

fn param_error(msg: &str) -> Response {
    envelope("400", msg, Value::Null)
}

// ---- price/save ---------------------------------------------------------------------------------

pub fn router() -> Router<Arc<State>> {
    Router::new()
        .route(
            "/open-api/openapi-business-backend/product/price/save",
            post(price_save),
        )
        .route("/open-api/goods/update-cost", post(update_cost))
}

/// The shop settings of the verified supplier.
fn shop_of(state: &State, key_id: &str) -> ShopSettings {
    state
        .shein
        .lock()
        .suppliers
        .get(key_id)
        .map(|s| s.shop.clone())
        .unwrap_or_default()
}

/// One `productPriceList` entry's amounts checked, as stored: (shop price, special price), or
/// SHEIN's message.
fn check_price(e: &Fields<'_>, shop: &ShopSettings, min: Option<Decimal>) -> Result<(Money, Money), String> {
    let site = text(e, "site").unwrap_or_default();
    if site != shop.site {
        return Err(format!("站点{site}不可用,该供应商的站点为{}", shop.site));
    }
    let currency = text(e, "currencyCode").unwrap_or_default();
    if currency != shop.currency {
        return Err(format!("币种{currency}与站点币种{}不一致", shop.currency));
    }
    let shop_price = amount(e, "shopPrice")?.ok_or("shopPrice不能为空")?;
    if shop_price <= Decimal::ZERO {
        return Err("shopPrice必须大于0".into());
    }
    // omitted (or null) is 0, as on SHEIN: the special price is reset
    let special = amount(e, "specialPrice")?.unwrap_or(Decimal::ZERO);
    if special < Decimal::ZERO {
        return Err("specialPrice不能为负数".into());
    }
    if special > shop_price {
        return Err("specialPrice不能高于shopPrice".into());
    }
    if let Some(min) = min {
        for (key, d) in [("shopPrice", shop_price), ("specialPrice", special)] {
            if d > Decimal::ZERO && d < min {
                return Err(format!("{key}不能低于最低价{min}"));
            }
        }
    }
    Ok((money(shop_price, "shopPrice")?, money(special, "specialPrice")?))
}

/// The SKU's price for `site` becomes `base` / `special` in `currency`.
fn store_price(sku: &mut Sku, shop: &ShopSettings, base: Money, special: Money) {
    let info = PriceInfo {
        site: shop.site.clone(),
        base_price: base,
        special_price: special,
        currency: shop.currency.clone(),
    };
    match sku.prices.iter_mut().find(|p| p.site == shop.site) {
        Some(p) => *p = info,
        None => sku.prices.push(info),
    }
    sku.price_writes += 1;
}

pub(crate) async fn price_save(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key_id = match verify(&state, &headers, uri.path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    state.count("shein price/save calls");
    let shop = shop_of(&state, &key_id);
    if shop.mode != ShopMode::SelfOperated {
        return envelope(MANAGED_SHOP.0, MANAGED_SHOP.1, Value::Null);
    }
    let Some(b) = serde_json::from_slice::<Fields<'_>>(&body).ok() else {
        return param_error("请求参数格式错误");
    };
    let entries = match list(&b, "productPriceList") {
        Some(l) if !l.is_empty() => l,
        _ => return param_error("productPriceList不能为空"),
    };
    if entries.len() > MAX_PRICE_ENTRIES {
        return param_error(&format!("productPriceList最多{MAX_PRICE_ENTRIES}条"));
    }
    let mut m = state.shein.lock();
    let min = m.min_price;
    let mut data = Vec::with_capacity(entries.len());
    for raw in entries {
        let e = fields(raw).unwrap_or_default();
        let code = text(&e, "productCode").unwrap_or_default();
        let result = if code.is_empty() {
            Err("productCode不能为空".to_string())
        } else {
            check_price(&e, &shop, min).and_then(|(base, special)| {
                let sku = m.skus.get_mut(&code).filter(|s| s.open_key_id == key_id);
                let sku = sku.ok_or("SKU不存在或不属于该供应商")?;
                store_price(sku, &shop, base, special);
                Ok(())
            })
        };
        let (success, message) = outcome(&state, "shein price writes", result);
        data.push(json!({"success": success, "message": message, "productCode": code}));
    }
    envelope("0", "OK", json!({ "data": data }))
}

// ---- update-cost --------------------------------------------------------------------------------

/// Semi- and fully-managed shops. The request shape is not published in SHEIN's public pages;
/// decided here as a third-party SHEIN integration sends it (snake_case, one SPU per call):
/// `{"spu_name": "M1", "skc_info_list": [{"skc_name": "sM1", "change_price_reason_flag"?: "4",
/// "change_remark"?: "...", "sku_info_list": [{"sku_code": "I1-0", "cost": 80.00,
/// "currency": "MXN"}]}]}`.
///
/// Whole-call refusals: a self-operated shop ([`SELF_OPERATED_SHOP`]); a body that is not an
/// object, a missing `spu_name`, an empty `skc_info_list` or `sku_info_list`, more than
/// [`MAX_COST_SKUS`] SKUs in all (code `400`); an unknown or another supplier's SPU
/// ([`SPU_NOT_FOUND`]). Each SKU then stands alone, answered (decided here, as `price/save`) in
/// `info.data[]{success, message, skuCode}`: its SKC must be one of the SPU's, the SKU one of the
/// SKC's, `currency` the supplier's, `cost` a JSON number > 0, < 100000, at most 2 decimals.
pub(crate) async fn update_cost(
    AxState(state): AxState<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key_id = match verify(&state, &headers, uri.path()) {
        Ok(k) => k,
        Err(r) => return r,
    };
    state.count("shein update-cost calls");
    let shop = shop_of(&state, &key_id);
    if shop.mode == ShopMode::SelfOperated {
        return envelope(SELF_OPERATED_SHOP.0, SELF_OPERATED_SHOP.1, Value::Null);
    }
    let Some(b) = serde_json::from_slice::<Fields<'_>>(&body).ok() else {
        return param_error("请求参数格式错误");
    };
    let Some(spu_name) = text(&b, "spu_name").filter(|s| !s.is_empty()) else {
        return param_error("spu_name不能为空");
    };
    // (skc_name, its SKUs' fields)
    let mut skcs = Vec::new();
    for raw in list(&b, "skc_info_list").unwrap_or_default() {
        let skc = fields(raw).unwrap_or_default();
        let skus: Vec<Fields<'_>> = list(&skc, "sku_info_list")
            .unwrap_or_default()
            .into_iter()
            .map(|s| fields(s).unwrap_or_default())
            .collect();
        if skus.is_empty() {
            return param_error("sku_info_list不能为空");
        }
        skcs.push((text(&skc, "skc_name").unwrap_or_default(), skus));
    }
    if skcs.is_empty() {
        return param_error("skc_info_list不能为空");
    }
    if skcs.iter().map(|(_, s)| s.len()).sum::<usize>() > MAX_COST_SKUS {
        return param_error(&format!("每次最多更新{MAX_COST_SKUS}个SKU"));
    }
    let mut m = state.shein.lock();
    let Some(spu) = m.catalog.spus.get(&spu_name).filter(|s| s.open_key_id == key_id) else {
        return envelope(SPU_NOT_FOUND.0, SPU_NOT_FOUND.1, Value::Null);
    };
    let skc_skus: Vec<(String, Vec<String>)> = spu.skcs.iter().map(|s| (s.name.clone(), s.sku_codes.clone())).collect();
    let mut data = Vec::new();
    for (skc_name, skus) in skcs {
        let in_skc = skc_skus.iter().find(|(n, _)| *n == skc_name).map(|(_, c)| c);
        for f in skus {
            let code = text(&f, "sku_code").unwrap_or_default();
            let result = (|| {
                let in_skc = in_skc.ok_or_else(|| format!("SKC[{skc_name}]不属于SPU[{spu_name}]"))?;
                if !in_skc.contains(&code) {
                    return Err("SKU不存在或不属于该SKC".to_string());
                }
                let cost = check_cost(&f, &shop)?;
                let sku = m.skus.get_mut(&code).ok_or("SKU不存在或不属于该SKC")?;
                sku.cost = Some(cost);
                sku.cost_writes += 1;
                Ok(())
            })();
            let (success, message) = outcome(&state, "shein cost writes", result);
            data.push(json!({"success": success, "message": message, "skuCode": code}));
        }
    }
    envelope("0", "OK", json!({ "data": data }))
}

fn check_cost(f: &Fields<'_>, shop: &ShopSettings) -> Result<Cost, String> {
    let currency = text(f, "currency").unwrap_or_default();
    if currency != shop.currency {
        return Err(format!("币种{currency}与供应商币种{}不一致", shop.currency));
    }
    let cost = amount(f, "cost")?.ok_or("cost不能为空")?;
    if cost <= Decimal::ZERO || cost >= COST_CEILING {
        return Err("cost必须大于0且小于100000".into());
    }
    Ok(Cost {
        cost_price: money(cost, "cost")?,
        currency,
    })
}

// ---- admin (/_admin/shein/...) ------------------------------------------------------------------

pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/prices/config", post(admin_price_config))
        .route("/prices/{sku_code}", get(admin_get_prices))
        .route("/suppliers/{open_key_id}", post(admin_shop))
}

fn admin_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({"error": msg}))).into_response()
}

/// `{"sku_code", "prices": [{"site", "base_price", "special_price", "currency"}], "cost":
/// {"cost", "currency"} | null, "price_writes", "cost_writes"}`, amounts as decimal text.
async fn admin_get_prices(AxState(state): AxState<Arc<State>>, Path(code): Path<String>) -> Response {
    let m = state.shein.lock();
    let Some(s) = m.skus.get(&code) else {
        return admin_error(StatusCode::NOT_FOUND, "no such sku");
    };
    let prices: Vec<Value> = s
        .prices
        .iter()
        .map(|p| {
            json!({"site": p.site, "base_price": p.base_price.to_string(),
                   "special_price": p.special_price.to_string(), "currency": p.currency})
        })
        .collect();
    let cost = s
        .cost
        .as_ref()
        .map(|c| json!({"cost": c.cost_price.to_string(), "currency": c.currency}));
    Json(json!({"sku_code": code, "prices": prices, "cost": cost,
                "price_writes": s.price_writes, "cost_writes": s.cost_writes}))
    .into_response()
}

/// `{"min_price": "10.00" | null}`: `price/save` refuses a shop or special price (other than 0)
/// below it. None by default.
async fn admin_price_config(AxState(state): AxState<Arc<State>>, Json(b): Json<Value>) -> Response {
    let min = match b.get("min_price") {
        Some(Value::Null) => None,
        Some(Value::String(s)) => match Money::parse(s).and_then(|_| Decimal::from_str_exact(s).ok()) {
            Some(d) => Some(d),
            None => return admin_error(StatusCode::BAD_REQUEST, "min_price must be decimal text like \"10.00\""),
        },
        _ => return admin_error(StatusCode::BAD_REQUEST, "min_price (decimal text or null) is required"),
    };
    state.shein.lock().min_price = min;
    Json(json!({"ok": true, "min_price": min.map(|d| d.to_string())})).into_response()
}

/// `{"mode"?, "site"?, "currency"?}` → the supplier's settings.
async fn admin_shop(AxState(state): AxState<Arc<State>>, Path(key_id): Path<String>, Json(b): Json<Value>) -> Response {
    let mut m = state.shein.lock();
    let Some(s) = m.suppliers.get_mut(&key_id) else {
        return admin_error(StatusCode::NOT_FOUND, "no such supplier");
    };
    match s.shop.with_admin_fields(&b) {
        Ok(shop) => {
            s.shop = shop;
            Json(s.shop.to_json()).into_response()
        }
        Err(e) => admin_error(StatusCode::BAD_REQUEST, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shein::tests::signed;
    use crate::shein_catalog::{generate, spu_info, Spec};

    const SAVE: &str = "/open-api/openapi-business-backend/product/price/save";
    const COST: &str = "/open-api/goods/update-cost";
    const SPU_INFO: &str = "/open-api/goods/spu-info";
    const AT_23: &str = r#""shopPrice":23,"specialPrice":0"#;

    type Key = (String, String);

    /// A state with one app and supplier A, whose catalog is SPUs `M1`..`M3`, each one SKC
    /// `sM{i}` of two SKUs `I{i}-0`, `I{i}-1` at 100.00 MXN on shein-mx.
    fn setup() -> (Arc<State>, Key) {
        let state = Arc::new(State::default());
        let app_secret = "698E4F20DFBA4B85B2291C2BCB7381C5";
        state.shein.lock().apps.insert("app1".into(), app_secret.into());
        let a = supplier(&state, 1);
        let catalog = json!({"open_key_id": a.0, "products": 3, "first_id": 1, "variations": 2, "variations_every": 1});
        gen(&state, catalog);
        (state, a)
    }

    /// (openKeyId, secretKey)
    fn supplier(state: &State, id: u64) -> Key {
        let s = state.shein.lock().add_supplier("app1", id, "st");
        let field = |k: &str| s[k].as_str().unwrap_or_default().to_string();
        (field("open_key_id"), field("secret_key"))
    }

    fn gen(state: &State, body: Value) {
        let spec: Spec = serde_json::from_value(body).unwrap();
        generate(&mut state.shein.lock(), &spec).unwrap();
    }

    /// `path` called with this raw body (so amounts are written as given), signed over
    /// `signed_path`.
    async fn send_as(state: &Arc<State>, key: &Key, signed_path: &str, path: &str, body: &str) -> Response {
        let (s, h) = (AxState(state.clone()), signed(&key.0, &key.1, signed_path));
        let (uri, b) = (path.parse().unwrap(), Bytes::from(body.to_string()));
        match path {
            SAVE => price_save(s, uri, h, b).await,
            COST => update_cost(s, uri, h, b).await,
            _ => spu_info(s, uri, h, b).await,
        }
    }

    async fn send(state: &Arc<State>, key: &Key, path: &str, body: &str) -> Value {
        let r = send_as(state, key, path, path, body).await;
        assert_eq!(r.status(), 200);
        json_of(r).await
    }

    async fn text(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    async fn json_of(r: Response) -> Value {
        serde_json::from_str(&text(r).await).unwrap()
    }

    /// The raw `spu-info` answer for SPU `M1`.
    async fn spu_m1(state: &Arc<State>, key: &Key) -> String {
        let body = r#"{"languageList":["en"],"spuName":"M1"}"#;
        text(send_as(state, key, SPU_INFO, SPU_INFO, body).await).await
    }

    fn code_msg(r: &Value) -> (&str, &str) {
        (
            r["code"].as_str().unwrap_or_default(),
            r["msg"].as_str().unwrap_or_default(),
        )
    }

    /// Each entry's (success, message).
    fn outcomes(r: &Value) -> Vec<(bool, &str)> {
        let data = r["info"]["data"].as_array().unwrap();
        data.iter()
            .map(|d| (d["success"].as_bool().unwrap(), d["message"].as_str().unwrap()))
            .collect()
    }

    async fn admin_prices(state: &Arc<State>, code: &str) -> Value {
        json_of(admin_get_prices(AxState(state.clone()), Path(code.into())).await).await
    }

    async fn set_shop(state: &Arc<State>, key: &Key, body: Value) -> Response {
        admin_shop(AxState(state.clone()), Path(key.0.clone()), Json(body)).await
    }

    /// One price/save entry for a SKU of A's (shein-mx, MXN) with the amounts as raw JSON.
    fn entry(code: &str, amounts: &str) -> String {
        format!(r#"{{"productCode":"{code}","currencyCode":"MXN","site":"shein-mx",{amounts}}}"#)
    }

    async fn save(state: &Arc<State>, key: &Key, entries: &[String]) -> Value {
        send(
            state,
            key,
            SAVE,
            &format!(r#"{{"productPriceList":[{}]}}"#, entries.join(",")),
        )
        .await
    }

    /// (base_price, special_price) of the SKU's first price, as the admin reads them.
    async fn prices_of(state: &Arc<State>, code: &str) -> (String, String) {
        let p = &admin_prices(state, code).await["prices"][0];
        let field = |k: &str| p[k].as_str().unwrap_or_default().to_string();
        (field("base_price"), field("special_price"))
    }

    fn pair(base: &str, special: &str) -> (String, String) {
        (base.into(), special.into())
    }

    #[tokio::test]
    async fn a_price_written_is_what_spu_info_and_admin_read() {
        let (state, a) = setup();
        let r = save(&state, &a, &[entry("I1-0", r#""shopPrice":23.0,"specialPrice":19.0"#)]).await;
        assert_eq!(r["code"], "0");
        let ok = json!([{"success": true, "message": "成功", "productCode": "I1-0"}]);
        assert_eq!(r["info"]["data"], ok);
        let raw = spu_m1(&state, &a).await;
        let want = r#""skuCode":"I1-0","supplierSku":"SKU-0-0","mallState":1,"priceInfoList":[{"site":"shein-mx","basePrice":23.00,"specialPrice":19.00,"currency":"MXN"}]"#;
        assert!(raw.contains(want), "{raw}");
        // the other SKU keeps its price; no cost on a self-operated shop
        assert!(raw.contains(r#""basePrice":100.00,"specialPrice":0.00"#), "{raw}");
        assert!(!raw.contains("costInfo"), "{raw}");
        let prices = json!([{"site": "shein-mx", "base_price": "23.00", "special_price": "19.00", "currency": "MXN"}]);
        let want = json!({"sku_code": "I1-0", "prices": prices, "cost": null, "price_writes": 1, "cost_writes": 0});
        assert_eq!(admin_prices(&state, "I1-0").await, want);

        // without specialPrice (or with null) it is reset to 0, as on SHEIN
        for amounts in [r#""shopPrice":25"#, r#""shopPrice":25,"specialPrice":null"#] {
            save(&state, &a, &[entry("I1-0", r#""shopPrice":25,"specialPrice":20"#)]).await;
            let r = save(&state, &a, &[entry("I1-0", amounts)]).await;
            assert_eq!(outcomes(&r), [(true, "成功")]);
            assert_eq!(prices_of(&state, "I1-0").await, pair("25.00", "0.00"));
        }
        // amounts read exactly from their text: exponents, trailing zeros, many digits
        for (amounts, base, special) in [
            (r#""shopPrice":2.3e1,"specialPrice":1.95E1"#, "23.00", "19.50"),
            (r#""shopPrice":19.990,"specialPrice":0"#, "19.99", "0.00"),
            (
                r#""shopPrice":123456789012.99,"specialPrice":1.1"#,
                "123456789012.99",
                "1.10",
            ),
        ] {
            let r = save(&state, &a, &[entry("I1-0", amounts)]).await;
            assert_eq!(outcomes(&r), [(true, "成功")], "{amounts}");
            assert_eq!(prices_of(&state, "I1-0").await, pair(base, special));
        }
        assert_eq!(admin_prices(&state, "I1-0").await["price_writes"], 8);
        let counters = state.counters.lock();
        let counted = (counters["shein price/save calls"], counters["shein price writes"]);
        assert_eq!(counted, (8, 8));
    }

    #[tokio::test]
    async fn each_entry_is_refused_alone() {
        let (state, a) = setup();
        let b = supplier(&state, 2);
        gen(&state, json!({"open_key_id": b.0, "products": 1, "first_id": 100}));
        let ok = r#""shopPrice":23.00,"specialPrice":19.00"#;
        let own = |site: &str, currency: &str| {
            format!(r#"{{"productCode":"I1-0","currencyCode":"{currency}","site":"{site}","shopPrice":23}}"#)
        };
        let cases: Vec<(String, &str)> = vec![
            (entry("NOPE", ok), "SKU不存在或不属于该供应商"),
            (entry("I100-0", ok), "SKU不存在或不属于该供应商"),
            (
                r#"{"currencyCode":"MXN","site":"shein-mx","shopPrice":23}"#.into(),
                "productCode不能为空",
            ),
            ("5".into(), "productCode不能为空"),
            (own("shein-us", "MXN"), "站点shein-us不可用,该供应商的站点为shein-mx"),
            (own("shein-mx", "USD"), "币种USD与站点币种MXN不一致"),
            (entry("I1-0", r#""shopPrice":0,"specialPrice":0"#), "shopPrice必须大于0"),
            (
                entry("I1-0", r#""shopPrice":-5,"specialPrice":0"#),
                "shopPrice必须大于0",
            ),
            (entry("I1-0", r#""shopPrice":23.456"#), "shopPrice最多保留2位小数"),
            (entry("I1-0", r#""shopPrice":"23.00""#), "shopPrice格式错误"),
            (entry("I1-0", r#""specialPrice":0"#), "shopPrice不能为空"),
            (
                entry("I1-0", r#""shopPrice":23,"specialPrice":30"#),
                "specialPrice不能高于shopPrice",
            ),
            (
                entry("I1-0", r#""shopPrice":23,"specialPrice":1.005"#),
                "specialPrice最多保留2位小数",
            ),
            (
                entry("I1-0", r#""shopPrice":23,"specialPrice":-1"#),
                "specialPrice不能为负数",
            ),
            (entry("I1-0", r#""shopPrice":1234567890123"#), "shopPrice超出范围"),
        ];
        let mut entries: Vec<String> = cases.iter().map(|(e, _)| e.clone()).collect();
        entries.push(entry("I2-0", ok));
        let r = save(&state, &a, &entries).await;
        assert_eq!(r["code"], "0");
        let mut want: Vec<(bool, &str)> = cases.iter().map(|(_, m)| (false, *m)).collect();
        want.push((true, "成功"));
        assert_eq!(outcomes(&r), want);
        assert_eq!(r["info"]["data"][0]["productCode"], "NOPE");
        assert_eq!(r["info"]["data"][cases.len()]["productCode"], "I2-0");
        // nothing refused was stored
        for code in ["I1-0", "I100-0"] {
            assert_eq!(admin_prices(&state, code).await["price_writes"], 0);
            assert_eq!(prices_of(&state, code).await, pair("100.00", "0.00"));
        }

        // the admin minimum: shop and special prices (other than 0) below it are refused
        let r = admin_price_config(AxState(state.clone()), Json(json!({"min_price": "10.00"}))).await;
        assert_eq!(json_of(r).await, json!({"ok": true, "min_price": "10.00"}));
        let entries = [
            entry("I1-0", r#""shopPrice":9.99,"specialPrice":0"#),
            entry("I1-1", r#""shopPrice":20,"specialPrice":5"#),
            entry("I2-1", r#""shopPrice":10,"specialPrice":0"#),
            entry("I3-0", r#""shopPrice":20,"specialPrice":10"#),
        ];
        let r = save(&state, &a, &entries).await;
        let want = [
            (false, "shopPrice不能低于最低价10.00"),
            (false, "specialPrice不能低于最低价10.00"),
            (true, "成功"),
            (true, "成功"),
        ];
        assert_eq!(outcomes(&r), want);
        // lifted again
        admin_price_config(AxState(state.clone()), Json(json!({"min_price": null}))).await;
        let r = save(&state, &a, &[entry("I1-0", r#""shopPrice":0.01,"specialPrice":0"#)]).await;
        assert_eq!(outcomes(&r), [(true, "成功")]);
        for bad in [json!({}), json!({"min_price": "abc"}), json!({"min_price": 10})] {
            let r = admin_price_config(AxState(state.clone()), Json(bad)).await;
            assert_eq!(r.status(), 400);
        }
    }

    #[tokio::test]
    async fn at_most_100_entries_a_call() {
        let (state, a) = setup();
        let b = supplier(&state, 2);
        gen(&state, json!({"open_key_id": b.0, "products": 100, "first_id": 1000}));
        let amounts = r#""shopPrice":50,"specialPrice":40"#;
        let entries: Vec<String> = (1000..1101).map(|i| entry(&format!("I{i}-0"), amounts)).collect();
        let r = save(&state, &b, &entries).await;
        assert_eq!(code_msg(&r), ("400", "productPriceList最多100条"));
        assert_eq!(admin_prices(&state, "I1000-0").await["price_writes"], 0);
        let r = save(&state, &b, &entries[..100]).await;
        assert_eq!(r["code"], "0");
        assert_eq!(outcomes(&r), vec![(true, "成功"); 100]);
        assert_eq!(r["info"]["data"][99]["productCode"], "I1099-0");
        assert_eq!(prices_of(&state, "I1099-0").await, pair("50.00", "40.00"));
        // empty, missing, not a list, not JSON
        for body in [r#"{"productPriceList":[]}"#, "{}", r#"{"productPriceList":{}}"#] {
            let r = send(&state, &a, SAVE, body).await;
            assert_eq!(code_msg(&r), ("400", "productPriceList不能为空"), "{body}");
        }
        let r = send(&state, &a, SAVE, "not json").await;
        assert_eq!(code_msg(&r), ("400", "请求参数格式错误"));
    }

    /// An update-cost body: one SKC of the SPU, these (sku_code, raw cost) in MXN.
    fn cost_body(spu: &str, skc: &str, skus: &[(&str, &str)]) -> String {
        let skus: Vec<String> = skus
            .iter()
            .map(|(code, cost)| format!(r#"{{"sku_code":"{code}","cost":{cost},"currency":"MXN"}}"#))
            .collect();
        let skc = format!(
            r#"{{"skc_name":"{skc}","change_price_reason_flag":"4","sku_info_list":[{}]}}"#,
            skus.join(",")
        );
        format!(r#"{{"spu_name":"{spu}","skc_info_list":[{skc}]}}"#)
    }

    #[tokio::test]
    async fn managed_shops_set_a_cost_not_a_price() {
        let (state, a) = setup();
        // a self-operated shop has no cost to set
        let r = send(&state, &a, COST, &cost_body("M1", "sM1", &[("I1-0", "80")])).await;
        assert_eq!(code_msg(&r), SELF_OPERATED_SHOP);
        assert!(r["info"].is_null());

        let r = set_shop(&state, &a, json!({"mode": "semi_managed"})).await;
        let want = json!({"mode": "semi_managed", "site": "shein-mx", "currency": "MXN"});
        assert_eq!(json_of(r).await, want);
        let r = save(&state, &a, &[entry("I1-0", AT_23)]).await;
        assert_eq!(code_msg(&r), MANAGED_SHOP);
        assert_eq!(admin_prices(&state, "I1-0").await["price_writes"], 0);

        let body = cost_body("M1", "sM1", &[("I1-0", "80.00"), ("I1-1", "99999.99")]);
        let r = send(&state, &a, COST, &body).await;
        assert_eq!(r["code"], "0");
        let ok = |code: &str| json!({"success": true, "message": "成功", "skuCode": code});
        assert_eq!(r["info"]["data"], json!([ok("I1-0"), ok("I1-1")]));
        let p = admin_prices(&state, "I1-0").await;
        assert_eq!(p["cost"], json!({"cost": "80.00", "currency": "MXN"}));
        assert_eq!(p["cost_writes"], 1);
        // the selling price is SHEIN's: unchanged
        assert_eq!(prices_of(&state, "I1-0").await, pair("100.00", "0.00"));
        let raw = spu_m1(&state, &a).await;
        assert!(
            raw.contains(r#""costInfo":{"costPrice":80.00,"currency":"MXN"}"#),
            "{raw}"
        );

        // each SKU alone
        let skus = [
            ("I1-0", "100000"),
            ("I1-0", "0"),
            ("I1-0", "1.234"),
            ("I1-0", "\"5\""),
            ("I2-0", "5"),
            ("I1-1", "12.5"),
        ];
        let r = send(&state, &a, COST, &cost_body("M1", "sM1", &skus)).await;
        let want = [
            (false, "cost必须大于0且小于100000"),
            (false, "cost必须大于0且小于100000"),
            (false, "cost最多保留2位小数"),
            (false, "cost格式错误"),
            (false, "SKU不存在或不属于该SKC"),
            (true, "成功"),
        ];
        assert_eq!(outcomes(&r), want);
        let usd = cost_body("M1", "sM1", &[("I1-0", "5")]).replace("MXN", "USD");
        let r = send(&state, &a, COST, &usd).await;
        assert_eq!(outcomes(&r), [(false, "币种USD与供应商币种MXN不一致")]);
        let r = send(&state, &a, COST, &cost_body("M1", "sM2", &[("I2-0", "5")])).await;
        assert_eq!(outcomes(&r), [(false, "SKC[sM2]不属于SPU[M1]")]);
        let p = admin_prices(&state, "I1-0").await;
        assert_eq!((&p["cost"]["cost"], &p["cost_writes"]), (&json!("80.00"), &json!(1)));
        assert_eq!(admin_prices(&state, "I1-1").await["cost"]["cost"], "12.50");

        // whole-call refusals
        let b = supplier(&state, 2);
        gen(&state, json!({"open_key_id": b.0, "products": 1, "first_id": 100}));
        for spu in ["M100", "M999"] {
            let body = cost_body(spu, &format!("s{spu}"), &[("I100-0", "5")]);
            assert_eq!(code_msg(&send(&state, &a, COST, &body).await), SPU_NOT_FOUND);
        }
        let many = vec![("I1-0", "5"); 101];
        for (body, msg) in [
            (cost_body("M1", "sM1", &many), "每次最多更新100个SKU"),
            (cost_body("M1", "sM1", &[]), "sku_info_list不能为空"),
            (
                r#"{"spu_name":"M1","skc_info_list":[]}"#.into(),
                "skc_info_list不能为空",
            ),
            (r#"{"skc_info_list":[]}"#.into(), "spu_name不能为空"),
            ("[]".into(), "请求参数格式错误"),
        ] {
            assert_eq!(code_msg(&send(&state, &a, COST, &body).await), ("400", msg));
        }
        assert_eq!(admin_prices(&state, "I1-0").await["cost_writes"], 1);
        let r = send(&state, &a, COST, &cost_body("M1", "sM1", &many[..100])).await;
        assert_eq!(outcomes(&r), vec![(true, "成功"); 100]);

        // fully managed: the same
        set_shop(&state, &a, json!({"mode": "fully_managed"})).await;
        assert_eq!(code_msg(&save(&state, &a, &[entry("I1-0", AT_23)]).await), MANAGED_SHOP);
        let r = send(&state, &a, COST, &cost_body("M1", "sM1", &[("I1-0", "70")])).await;
        assert_eq!(outcomes(&r), [(true, "成功")]);
        assert_eq!(state.counters.lock()["shein cost writes"], 104);
    }

    #[tokio::test]
    async fn signatures_and_rate_limit_as_every_shein_call() {
        let (state, a) = setup();
        let body = format!(r#"{{"productPriceList":[{}]}}"#, entry("I1-0", AT_23));
        let wrong = (a.0.clone(), "not-the-secret".to_string());
        let unknown = ("NOPE".to_string(), a.1.clone());
        for path in [SAVE, COST] {
            // a wrong secret, an unknown openKeyId, signed over another path
            for (key, signed_path) in [(&wrong, path), (&unknown, path), (&a, SPU_INFO)] {
                let r = send_as(&state, key, signed_path, path, &body).await;
                assert_eq!(r.status(), 200);
                assert_eq!(
                    code_msg(&json_of(r).await),
                    ("openapi00001", "签名错误:生成的签名不正确")
                );
            }
        }
        {
            let counters = state.counters.lock();
            assert_eq!(counters["shein bad signature"], 6);
            assert!(!counters.contains_key("shein price/save calls"));
            assert!(!counters.contains_key("shein update-cost calls"));
        }
        assert_eq!(admin_prices(&state, "I1-0").await["price_writes"], 0);

        state.shein.lock().rate.limit = Some(1);
        assert_eq!(send_as(&state, &a, SAVE, SAVE, &body).await.status(), 200);
        assert_eq!(send_as(&state, &a, SAVE, SAVE, &body).await.status(), 429);
        state.shein.lock().throttle_with_code = true;
        assert_eq!(send(&state, &a, COST, "{}").await["code"], "832213");
        assert_eq!(admin_prices(&state, "I1-0").await["price_writes"], 1);
    }

    #[tokio::test]
    async fn a_suppliers_site_and_currency_come_from_the_admin() {
        let (state, a) = setup();
        // a catalog naming a site and currency makes them the supplier's
        let us = json!({"open_key_id": a.0, "products": 1, "first_id": 50, "site": "shein-us", "currency": "USD"});
        gen(&state, us);
        assert_eq!(state.shein.lock().suppliers[&a.0].shop.site, "shein-us");
        let entry_us = entry("I50-0", AT_23)
            .replace("MXN", "USD")
            .replace("shein-mx", "shein-us");
        assert_eq!(outcomes(&save(&state, &a, &[entry_us]).await), [(true, "成功")]);
        let want = json!([{"site": "shein-us", "base_price": "23.00", "special_price": "0.00", "currency": "USD"}]);
        assert_eq!(admin_prices(&state, "I50-0").await["prices"], want);
        // a later catalog without them keeps the supplier's
        gen(&state, json!({"open_key_id": a.0, "products": 1, "first_id": 60}));
        assert_eq!(admin_prices(&state, "I60-0").await["prices"][0]["currency"], "USD");
        // so the shein-mx SKUs refuse shein-mx writes now
        let r = save(&state, &a, &[entry("I1-0", AT_23)]).await;
        assert_eq!(outcomes(&r), [(false, "站点shein-mx不可用,该供应商的站点为shein-us")]);
        // the supplier's settings, set and refused
        let r = set_shop(&state, &a, json!({"site": "shein-mx", "currency": "MXN"})).await;
        let want = json!({"mode": "self_operated", "site": "shein-mx", "currency": "MXN"});
        assert_eq!(json_of(r).await, want);
        let r = save(&state, &a, &[entry("I1-0", AT_23)]).await;
        assert_eq!(outcomes(&r), [(true, "成功")]);
        for bad in [json!({"mode": "managed"}), json!({"site": ""}), json!({"currency": 5})] {
            assert_eq!(set_shop(&state, &a, bad).await.status(), 400);
        }
        let r = admin_shop(AxState(state.clone()), Path("NOPE".into()), Json(json!({}))).await;
        assert_eq!(r.status(), 404);
        let r = admin_get_prices(AxState(state.clone()), Path("NOPE".into())).await;
        assert_eq!(r.status(), 404);
    }
}
