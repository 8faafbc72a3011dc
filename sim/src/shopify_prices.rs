//! Shopify prices through the GraphQL Admin API (`POST /admin/api/{version}/graphql.json`, handed
//! over by `shopify.rs` when [`is_price_document`] says so): the mutation
//! `productVariantsBulkUpdate(productId:, variants: [{id, price, compareAtPrice}],
//! allowPartialUpdates:)` and the lookup of a variant and its product from an inventory item
//! (`inventoryItem(id:) { variants(first:) { nodes { id product { id } } } }` from 2026-01,
//! `inventoryItem(id:) { variant { id product { id } } }` before). The price written is the
//! catalog's `Variant.price` (shopify_catalog.rs), so a later `productVariants` read shows it.
//!
//! Documents are parsed with the catalog's GraphQL parser and checked with graphql-ruby's error
//! shapes: unknown fields and arguments, missing required arguments, variable type mismatches,
//! undeclared or unused variables, undefined input types, and variable values that do not coerce
//! (`Variable $variants of type [ProductVariantsBulkInput!]! was provided invalid value for
//! 0.price (Could not coerce value 19.99 to Money)`). Such a reply has no `data` and costs nothing.
//!
//! Decisions where Shopify publishes nothing ([?]):
//! - Money input is a decimal STRING (`"19.99"`, `"20"`, `"-1"`); a JSON number, or text such as
//!   `"1,5"` or `"1e3"`, does not coerce. Prices are stored and answered with two decimals
//!   (`"19.9"` is `"19.90"`), as Shopify keeps variant prices.
//! - userErrors, `field` `["variants", "<i>", "<input field>"]`: `price` below 0, or below the
//!   shop's minimum (admin-set, `POST /_admin/shopify/shops/{shop}/min_price`; none by default):
//!   `GREATER_THAN_OR_EQUAL_TO`; `compareAtPrice` below 0: `NEGATIVE_PRICE_VALUE`; more than 2
//!   decimals, 10^18 or more, or a variant given twice in one call: `INVALID`; `price: null`:
//!   `BLANK`; no `id`: `PRODUCT_VARIANT_ID_MISSING`; a variant unknown or of another product:
//!   `PRODUCT_VARIANT_DOES_NOT_EXIST` (the lookup is scoped to the product); an unknown `productId`:
//!   `PRODUCT_DOES_NOT_EXIST` with `field: ["productId"]`, whatever `allowPartialUpdates` says.
//! - All or nothing unless `allowPartialUpdates: true`: one bad variant and nothing is written
//!   (`productVariants: null`; `product` answered when it exists). With it, the good variants are
//!   written and listed in `productVariants`, the bad ones reported in `userErrors`.
//! - More than 250 variants: the GraphQL error `MAX_INPUT_SIZE_EXCEEDED` ("The input array size of
//!   251 is greater than the maximum allowed of 250."), nothing charged.
//! - The mutation costs 10 points, requested and actual, like `inventorySetQuantities`.
//! - `InventoryItem.variant` stays in every version (Shopify's changelog deprecates it in 2026-01
//!   without removing it); `InventoryItem.variants` exists from 2026-01 only (before: "Field
//!   'variants' doesn't exist on type 'InventoryItem'"). Only `first`/`after` paging is emulated.
//! - Query cost by Shopify's calculation: `inventoryItem` 1, an object 1, a connection 2 + `first` ×
//!   node (`variants(first: 5) { nodes { id product { id } } }`: 1 + 2 + 5 × 2 = 13 requested;
//!   `variant { id product { id } }`: 3); the actual cost counts the nodes returned. An unknown
//!   inventory item (or one without a variant in the catalog) answers `inventoryItem: null`, 1 point.

use crate::shopify::Shopify;
use crate::shopify_catalog::{self as catalog, gql, PageInfo, Render, Variant};
use crate::state::State;
use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

/// At most this many variants per `productVariantsBulkUpdate`.
pub const MAX_VARIANTS_PER_CALL: usize = 250;
/// What one `productVariantsBulkUpdate` costs.
pub const MUTATION_COST: u64 = 10;
/// The first API version with `InventoryItem.variants`.
pub const VARIANTS_CONNECTION_FROM: &str = "2026-01";
/// Prices are kept with this many decimals; more is refused.
const PRICE_DECIMALS: u32 = 2;

const UPDATE_ARGS: &[(&str, &str)] = &[
    ("productId", "ID!"),
    ("variants", "[ProductVariantsBulkInput!]!"),
    ("allowPartialUpdates", "Boolean"),
    ("media", "[CreateMediaInput!]"),
];
const ITEM_ARGS: &[(&str, &str)] = &[("id", "ID!")];
const CONNECTION_ARGS: &[(&str, &str)] = &[
    ("first", "Int"),
    ("after", "String"),
    ("last", "Int"),
    ("before", "String"),
    ("reverse", "Boolean"),
];
/// Input types a variable may be declared with here.
const INPUT_TYPES: &[&str] = &[
    "ID",
    "String",
    "Int",
    "Boolean",
    "Float",
    "Money",
    "ProductVariantsBulkInput",
    "CreateMediaInput",
];
/// Real `ProductVariantsBulkInput` fields the sandbox does not emulate (refused, said so).
const INPUT_FIELDS_NOT_EMULATED: &[&str] = &[
    "barcode",
    "inventoryItem",
    "inventoryPolicy",
    "inventoryQuantities",
    "mediaId",
    "mediaSrc",
    "metafields",
    "optionValues",
    "requiresComponents",
    "showUnitPrice",
    "taxCode",
    "taxable",
    "unitPriceMeasurement",
];

/// Whether the GraphQL handler hands the document here: a mutation naming
/// `productVariantsBulkUpdate`, or a query naming `inventoryItem` without `inventoryLevel` (the
/// level read stays in shopify.rs).
pub fn is_price_document(query: &str) -> bool {
    let Ok(toks) = gql::lex(query) else {
        return query.contains("productVariantsBulkUpdate");
    };
    let named = |n: &str| toks.iter().any(|t| matches!(&t.tok, gql::Tok::Name(x) if x == n));
    match toks.first().map(|t| &t.tok) {
        Some(gql::Tok::Name(k)) if k == "mutation" => named("productVariantsBulkUpdate"),
        Some(gql::Tok::Name(k)) if k == "subscription" => false,
        _ => named("inventoryItem") && !named("inventoryLevel"),
    }
}

/// Answers the document for `shop` (always HTTP 200, as Shopify), `extensions.cost` on every reply.
pub fn answer(state: &State, m: &mut Shopify, shop: &str, version: &str, query: &str, variables: &Value) -> Value {
    match prepare(query, variables, version) {
        Err(errors) => {
            let available = m.spend(shop, 0.0).unwrap_or_else(|a| a);
            json!({"errors": errors.iter().map(gql::Error::to_json).collect::<Vec<_>>(),
                   "extensions": catalog::cost_json(m, 0, 0, available)})
        }
        Ok(Plan::Updates(calls)) => updates(state, m, shop, &calls),
        Ok(Plan::Lookups(items)) => lookups(state, m, shop, &items),
    }
}

// ---- types and input coercion -----------------------------------------------------------------

/// A GraphQL input type as written (`[ProductVariantsBulkInput!]!`).
#[derive(Clone, Debug, PartialEq)]
enum Ty {
    Named(String),
    List(Box<Ty>),
    NonNull(Box<Ty>),
}

impl Ty {
    fn parse(s: &str) -> Ty {
        if let Some(inner) = s.strip_suffix('!') {
            return Ty::NonNull(Box::new(Ty::parse(inner)));
        }
        match s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
            Some(inner) => Ty::List(Box::new(Ty::parse(inner))),
            None => Ty::Named(s.to_string()),
        }
    }

    fn named(&self) -> &str {
        match self {
            Ty::Named(n) => n,
            Ty::List(t) | Ty::NonNull(t) => t.named(),
        }
    }

    /// Whether a variable of this type may be passed where `arg` is expected.
    fn fits(&self, arg: &Ty) -> bool {
        match (self, arg) {
            (Ty::NonNull(v), Ty::NonNull(a)) => v.fits(a),
            (Ty::NonNull(v), a) => v.fits(a),
            (_, Ty::NonNull(_)) => false,
            (Ty::List(v), Ty::List(a)) => v.fits(a),
            (Ty::Named(v), Ty::Named(a)) => v == a,
            _ => false,
        }
    }
}

/// Why an input value does not coerce, and where (list indexes, input field names).
struct Problem {
    path: Vec<Value>,
    bad: Bad,
}

enum Bad {
    Null,
    Coerce(Value, String),
    NotObject(Value),
    UnknownField(String),
    NotEmulated(String),
}

impl Problem {
    fn explanation(&self) -> String {
        match &self.bad {
            Bad::Null => "Expected value to not be null".into(),
            Bad::Coerce(v, ty) => format!("Could not coerce value {v} to {ty}"),
            Bad::NotObject(v) => format!("Expected {v} to be a key-value object."),
            Bad::UnknownField(_) => "Field is not defined on ProductVariantsBulkInput".into(),
            Bad::NotEmulated(f) => format!("The sandbox does not emulate ProductVariantsBulkInput.{f}"),
        }
    }
}

/// Money as Shopify's scalar takes it: decimal text, optionally negative.
fn is_money(text: &str) -> bool {
    crate::catalog_rule::is_decimal(text.strip_prefix('-').unwrap_or(text))
}

/// The value coerced to `ty` (IDs as strings, a single value as a list of one), problems noted.
fn coerce(ty: &Ty, v: &Value, path: &[Value], out: &mut Vec<Problem>) -> Value {
    let problem = |bad| Problem {
        path: path.to_vec(),
        bad,
    };
    match ty {
        Ty::NonNull(_) if v.is_null() => {
            out.push(problem(Bad::Null));
            Value::Null
        }
        Ty::NonNull(inner) => coerce(inner, v, path, out),
        _ if v.is_null() => Value::Null,
        Ty::List(inner) => match v {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let mut here = path.to_vec();
                        here.push(json!(i));
                        coerce(inner, x, &here, out)
                    })
                    .collect(),
            ),
            single => Value::Array(vec![coerce(inner, single, path, out)]),
        },
        Ty::Named(name) if name == "ProductVariantsBulkInput" => {
            let Some(o) = v.as_object() else {
                out.push(problem(Bad::NotObject(v.clone())));
                return Value::Null;
            };
            let mut fields = Map::new();
            for (k, x) in o {
                let mut here = path.to_vec();
                here.push(json!(k));
                let field_ty = match k.as_str() {
                    "id" => "ID",
                    "price" | "compareAtPrice" => "Money",
                    f if INPUT_FIELDS_NOT_EMULATED.contains(&f) => {
                        out.push(Problem {
                            path: here,
                            bad: Bad::NotEmulated(k.clone()),
                        });
                        continue;
                    }
                    _ => {
                        out.push(Problem {
                            path: here,
                            bad: Bad::UnknownField(k.clone()),
                        });
                        continue;
                    }
                };
                fields.insert(k.clone(), coerce(&Ty::Named(field_ty.into()), x, &here, out));
            }
            Value::Object(fields)
        }
        Ty::Named(name) => {
            let fits = match name.as_str() {
                "ID" => v.is_string() || v.is_u64() || v.is_i64(),
                "String" => v.is_string(),
                "Int" => v.as_i64().is_some_and(|i| i32::try_from(i).is_ok()),
                "Boolean" => v.is_boolean(),
                "Money" => v.as_str().is_some_and(is_money),
                _ => true,
            };
            if !fits {
                out.push(problem(Bad::Coerce(v.clone(), name.clone())));
                return Value::Null;
            }
            match v {
                Value::Number(n) if name == "ID" => Value::String(n.to_string()),
                other => other.clone(),
            }
        }
    }
}

/// A literal's JSON value; None when a variable is nested in it (not emulated).
fn literal_json(v: &gql::Val) -> Option<Value> {
    Some(match v {
        gql::Val::Var(_) => return None,
        gql::Val::List(l) => Value::Array(l.iter().map(literal_json).collect::<Option<_>>()?),
        gql::Val::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, x)| literal_json(x).map(|x| (k.clone(), x)))
                .collect::<Option<_>>()?,
        ),
        other => other.to_json(),
    })
}

// ---- checking the document --------------------------------------------------------------------

enum Plan {
    Updates(Vec<Update>),
    Lookups(Vec<Lookup>),
}

/// One `productVariantsBulkUpdate`, checked.
struct Update {
    key: String,
    product_id: Value,
    variants: Vec<Value>,
    allow_partial: bool,
    selection: Vec<gql::Field>,
}

/// One `inventoryItem`, checked.
struct Lookup {
    key: String,
    id: Value,
    selection: Vec<gql::Field>,
    /// The cost of what does not depend on the data (the item and its `variant` objects).
    fixed_cost: u64,
    /// Per `variants` response key: (first, after, node cost).
    connections: HashMap<String, (usize, Option<u64>, u64)>,
}

impl Lookup {
    fn requested(&self) -> u64 {
        self.fixed_cost
            + self
                .connections
                .values()
                .map(|(first, _, node)| 2 + *first as u64 * node)
                .sum::<u64>()
    }
}

/// The operation being checked: its variables and the errors found.
struct Doc {
    op_path: String,
    op_label: String,
    /// variable -> (type for usage checks, type as written)
    declared: HashMap<String, (Ty, String)>,
    values: HashMap<String, Value>,
    used: HashSet<String>,
    /// static validation errors
    errors: Vec<gql::Error>,
    /// variable values that do not coerce (answered only when the document is valid)
    variable_errors: Vec<gql::Error>,
}

fn prepare(query: &str, variables: &Value, version: &str) -> Result<Plan, Vec<gql::Error>> {
    let op = gql::parse(query).map_err(|e| vec![e])?;
    let mut doc = Doc::new(&op, variables)?;
    let mutation = op.kind == "mutation";
    let (mut updates, mut lookups) = (Vec::new(), Vec::new());
    for f in &op.selection {
        let path = vec![doc.op_path.clone(), f.key().to_string()];
        match (mutation, f.name.as_str()) {
            (true, "productVariantsBulkUpdate") => updates.extend(doc.update(f, &path)),
            (false, "inventoryItem") => lookups.extend(doc.lookup(f, &path, version)),
            (_, other) => {
                let only = if mutation {
                    "productVariantsBulkUpdate"
                } else {
                    "inventoryItem"
                };
                doc.errors.push(
                    gql::Error::new(format!(
                        "The sandbox answers only {only} in this {} (found '{other}').",
                        op.kind
                    ))
                    .at(f.loc)
                    .with_path(path),
                );
            }
        }
    }
    for d in &op.vars {
        if !doc.used.contains(&d.name) {
            let message = format!("Variable ${} is declared by {} but not used", d.name, doc.op_label);
            doc.errors.push(
                gql::Error::new(message)
                    .at(d.loc)
                    .with_path(vec![doc.op_path.clone()])
                    .with_extensions(json!({"code": "variableNotUsed", "variableName": d.name})),
            );
        }
    }
    // graphql-ruby coerces variables only once the document is valid
    if !doc.errors.is_empty() {
        return Err(doc.errors);
    }
    if !doc.variable_errors.is_empty() {
        return Err(doc.variable_errors);
    }
    Ok(if mutation {
        Plan::Updates(updates)
    } else {
        Plan::Lookups(lookups)
    })
}

impl Doc {
    fn new(op: &gql::Operation, variables: &Value) -> Result<Doc, Vec<gql::Error>> {
        let op_path = match &op.name {
            Some(n) => format!("{} {n}", op.kind),
            None => op.kind.clone(),
        };
        let op_label = match &op.name {
            Some(n) => n.clone(),
            None => format!("anonymous {}", op.kind),
        };
        if op.kind == "subscription" {
            return Err(vec![gql::Error::new("Subscriptions are not emulated by the sandbox.")]);
        }
        let given = match variables {
            Value::Object(o) => o.clone(),
            Value::Null => Map::new(),
            _ => return Err(vec![gql::Error::new("Variables must be an object")]),
        };
        let mut doc = Doc {
            op_path,
            op_label,
            declared: HashMap::new(),
            values: HashMap::new(),
            used: HashSet::new(),
            errors: Vec::new(),
            variable_errors: Vec::new(),
        };
        for d in &op.vars {
            let mut ty = Ty::parse(&d.ty);
            if !INPUT_TYPES.contains(&ty.named()) {
                doc.errors.push(
                    gql::Error::new(format!("{} isn't a defined input type (on ${})", ty.named(), d.name))
                        .at(d.loc)
                        .with_path(vec![doc.op_path.clone()])
                        .with_extensions(json!({"code": "variableRequiresValidType", "typeName": ty.named(),
                                                "variableName": d.name})),
                );
            }
            let default = d.default.as_ref().map(gql::Val::to_json);
            let raw = given.get(&d.name).cloned().or(default.clone()).unwrap_or(Value::Null);
            let mut problems = Vec::new();
            let value = coerce(&ty, &raw, &[], &mut problems);
            if !problems.is_empty() {
                doc.variable_errors.push(variable_error(d, &raw, &problems));
            }
            // a variable with a default stands where a non-null argument is expected
            if default.is_some_and(|v| !v.is_null()) && !matches!(ty, Ty::NonNull(_)) {
                ty = Ty::NonNull(Box::new(ty));
            }
            doc.declared.insert(d.name.clone(), (ty, d.ty.clone()));
            doc.values.insert(d.name.clone(), value);
        }
        Ok(doc)
    }

    /// The field's arguments checked against `types` (name -> value; null or absent: left out).
    fn args(&mut self, f: &gql::Field, types: &[(&str, &str)], path: &[String]) -> HashMap<String, Value> {
        let mut out = HashMap::new();
        for (name, val, loc) in &f.args {
            let Some(&(_, arg_ty)) = types.iter().find(|(n, _)| n == name) else {
                self.errors.push(
                    gql::Error::new(format!("Field '{}' doesn't accept argument '{name}'", f.name))
                        .at(*loc)
                        .with_path(path.to_vec())
                        .with_extensions(json!({"code": "argumentNotAccepted", "name": f.name,
                                                "typeName": "Field", "argumentName": name})),
                );
                continue;
            };
            let value = match val {
                gql::Val::Var(v) => {
                    self.used.insert(v.clone());
                    let Some((var_ty, written)) = self.declared.get(v) else {
                        let message = format!("Variable ${v} is used by {} but not declared", self.op_label);
                        self.errors.push(
                            gql::Error::new(message)
                                .at(*loc)
                                .with_path(path.to_vec())
                                .with_extensions(json!({"code": "variableNotDefined", "variableName": v})),
                        );
                        continue;
                    };
                    if !var_ty.fits(&Ty::parse(arg_ty)) {
                        let strip = |t: &str| t.replace('!', "");
                        let kind = if strip(written) == strip(arg_ty) {
                            "Nullability mismatch"
                        } else if written.matches('[').count() != arg_ty.matches('[').count() {
                            "List dimension mismatch"
                        } else {
                            "Type mismatch"
                        };
                        self.errors.push(
                            gql::Error::new(format!(
                                "{kind} on variable ${v} and argument {name} ({written} / {arg_ty})"
                            ))
                            .at(*loc)
                            .with_path(path.to_vec())
                            .with_extensions(json!({"code": "variableMismatch", "variableName": v,
                                                    "typeName": written, "argumentName": name})),
                        );
                        continue;
                    }
                    self.values.get(v).cloned().unwrap_or(Value::Null)
                }
                literal => {
                    let Some(json) = literal_json(literal) else {
                        self.errors.push(
                            gql::Error::new("Variables inside input literals are not emulated by the sandbox.")
                                .at(*loc)
                                .with_path(path.to_vec()),
                        );
                        continue;
                    };
                    let mut problems = Vec::new();
                    let value = coerce(&Ty::parse(arg_ty), &json, &[], &mut problems);
                    if !problems.is_empty() {
                        for p in &problems {
                            let e = literal_error(f, name, arg_ty, literal, p).at(*loc);
                            let mut here = path.to_vec();
                            here.push(name.clone());
                            here.extend(p.path.iter().map(|x| x.as_str().map_or(x.to_string(), String::from)));
                            self.errors.push(e.with_path(here));
                        }
                        continue;
                    }
                    value
                }
            };
            if !value.is_null() {
                out.insert(name.clone(), value);
            }
        }
        let missing: Vec<&str> = types
            .iter()
            .filter(|(n, t)| t.ends_with('!') && !f.args.iter().any(|(a, ..)| a == n))
            .map(|(n, _)| *n)
            .collect();
        if !missing.is_empty() {
            let list = missing.join(", ");
            self.errors.push(
                gql::Error::new(format!("Field '{}' is missing required arguments: {list}", f.name))
                    .at(f.loc)
                    .with_path(path.to_vec())
                    .with_extensions(json!({"code": "missingRequiredArguments", "className": "Field",
                                            "name": f.name, "arguments": list})),
            );
        }
        out
    }

    fn no_directives(&mut self, f: &gql::Field, path: &[String]) {
        if let Some(d) = f.directives.first() {
            self.errors.push(
                gql::Error::new(format!("Directives on fields are not emulated by the sandbox (@{d})."))
                    .at(f.loc)
                    .with_path(path.to_vec()),
            );
        }
    }

    /// The selection of an object field returning `ty`, or the graphql-ruby error without one.
    fn selection<'f>(&mut self, f: &'f gql::Field, ty: &str, path: &[String]) -> Option<&'f [gql::Field]> {
        if f.selection.is_none() {
            self.errors.push(
                gql::Error::new(format!(
                    "Field must have selections (field '{}' returns {ty} but has no selections. Did you mean '{} {{ ... }}'?)",
                    f.name, f.name
                ))
                .at(f.loc)
                .with_path(path.to_vec())
                .with_extensions(json!({"code": "selectionMismatch", "nodeName": f.name, "typeName": ty})),
            );
        }
        f.selection.as_deref()
    }

    fn update(&mut self, f: &gql::Field, path: &[String]) -> Option<Update> {
        self.no_directives(f, path);
        let args = self.args(f, UPDATE_ARGS, path);
        let selection = self.selection(f, "ProductVariantsBulkUpdatePayload", path)?;
        catalog::check_selection("ProductVariantsBulkUpdatePayload", selection, path, &mut self.errors);
        if args.contains_key("media") {
            self.errors.push(
                gql::Error::new("The sandbox does not emulate productVariantsBulkUpdate(media:).")
                    .at(f.loc)
                    .with_path(path.to_vec()),
            );
        }
        let variants = args.get("variants")?.as_array()?.clone();
        if variants.len() > MAX_VARIANTS_PER_CALL {
            let loc = f.args.iter().find(|(n, ..)| n == "variants").map_or(f.loc, |a| a.2);
            let mut here = path.to_vec();
            here.push("variants".into());
            self.errors.push(
                gql::Error::new(format!(
                    "The input array size of {} is greater than the maximum allowed of {MAX_VARIANTS_PER_CALL}.",
                    variants.len()
                ))
                .at(loc)
                .with_path(here)
                .with_extensions(json!({"code": "MAX_INPUT_SIZE_EXCEEDED"})),
            );
        }
        Some(Update {
            key: f.key().to_string(),
            product_id: args.get("productId")?.clone(),
            variants,
            allow_partial: args.get("allowPartialUpdates").and_then(Value::as_bool) == Some(true),
            selection: selection.to_vec(),
        })
    }

    fn lookup(&mut self, f: &gql::Field, path: &[String], version: &str) -> Option<Lookup> {
        self.no_directives(f, path);
        let args = self.args(f, ITEM_ARGS, path);
        let selection = self.selection(f, "InventoryItem", path)?;
        let mut fixed_cost = 1;
        let mut connections = HashMap::new();
        for g in selection {
            let mut here = path.to_vec();
            here.push(g.key().to_string());
            match g.name.as_str() {
                "variants" if version >= VARIANTS_CONNECTION_FROM => {
                    if let Some(c) = self.connection(g, &here) {
                        connections.insert(g.key().to_string(), c);
                    }
                }
                "variants" => self.errors.push(
                    gql::Error::new("Field 'variants' doesn't exist on type 'InventoryItem'")
                        .at(g.loc)
                        .with_path(here)
                        .with_extensions(json!({"code": "undefinedField", "typeName": "InventoryItem",
                                                "fieldName": "variants"})),
                ),
                "variant" => {
                    self.no_directives(g, &here);
                    self.args(g, &[], &here);
                    if let Some(sub) = self.selection(g, "ProductVariant!", &here) {
                        fixed_cost += 1 + catalog::check_selection("ProductVariant", sub, &here, &mut self.errors);
                    }
                }
                // id, sku, tracked, __typename; anything else is an unknown field of InventoryItem
                _ => {
                    fixed_cost +=
                        catalog::check_selection("InventoryItem", std::slice::from_ref(g), path, &mut self.errors)
                }
            }
        }
        Some(Lookup {
            key: f.key().to_string(),
            id: args.get("id")?.clone(),
            selection: selection.to_vec(),
            fixed_cost,
            connections,
        })
    }

    /// `variants(first:, after:)`: (first, after, the cost of one node).
    fn connection(&mut self, g: &gql::Field, path: &[String]) -> Option<(usize, Option<u64>, u64)> {
        self.no_directives(g, path);
        let args = self.args(g, CONNECTION_ARGS, path);
        let sandbox = |what: &str| gql::Error::new(what.to_string()).at(g.loc).with_path(path.to_vec());
        for unsupported in ["last", "before", "reverse"] {
            if args.contains_key(unsupported) {
                self.errors.push(sandbox(&format!(
                    "The sandbox emulates InventoryItem.variants paging with first/after only ('{unsupported}' given)."
                )));
            }
        }
        let first = args.get("first").and_then(Value::as_i64);
        match first {
            None => self.errors.push(sandbox("you must provide one of first or last")),
            Some(n) if !(1..=catalog::MAX_PAGE).contains(&n) => self.errors.push(
                sandbox(&format!(
                    "The page size (first: {n}) must be between 1 and {}: connections return at most {} objects per page.",
                    catalog::MAX_PAGE,
                    catalog::MAX_PAGE
                ))
                .with_extensions(json!({"code": "BAD_REQUEST"})),
            ),
            Some(_) => {}
        }
        let after = match args.get("after").and_then(Value::as_str) {
            None => None,
            Some(c) => match catalog::decode_cursor(c) {
                Some(id) => Some(id),
                None => {
                    self.errors.push(
                        sandbox(&format!("Invalid cursor for current pagination sort: {c}"))
                            .with_extensions(json!({"code": "BAD_REQUEST"})),
                    );
                    None
                }
            },
        };
        let sub = self.selection(g, "ProductVariantConnection!", path)?;
        catalog::check_selection("ProductVariantConnection", sub, path, &mut self.errors);
        Some((
            first.unwrap_or(0).clamp(0, catalog::MAX_PAGE) as usize,
            after,
            catalog::node_cost(sub),
        ))
    }
}

/// graphql-ruby's error for a variable whose value does not coerce.
fn variable_error(d: &gql::VarDef, raw: &Value, problems: &[Problem]) -> gql::Error {
    let mut message = format!("Variable ${} of type {} was provided invalid value", d.name, d.ty);
    let located: Vec<String> = problems
        .iter()
        .filter(|p| !p.path.is_empty())
        .map(|p| {
            let at: Vec<String> = p
                .path
                .iter()
                .map(|x| x.as_str().map_or(x.to_string(), String::from))
                .collect();
            format!("{} ({})", at.join("."), p.explanation())
        })
        .collect();
    if !located.is_empty() {
        message = format!("{message} for {}", located.join(", "));
    }
    let problems: Vec<Value> = problems
        .iter()
        .map(|p| json!({"path": p.path, "explanation": p.explanation()}))
        .collect();
    gql::Error::new(message)
        .at(d.loc)
        .with_extensions(json!({"value": raw, "problems": problems}))
}

/// graphql-ruby's static error for a literal argument that does not coerce: on the innermost
/// input field when the problem is inside a ProductVariantsBulkInput.
fn literal_error(f: &gql::Field, arg: &str, arg_ty: &str, literal: &gql::Val, p: &Problem) -> gql::Error {
    let leaf = p.path.last().and_then(Value::as_str);
    match (&p.bad, leaf) {
        (Bad::UnknownField(k), _) => gql::Error::new(format!(
            "InputObject 'ProductVariantsBulkInput' doesn't accept argument '{k}'"
        ))
        .with_extensions(
            json!({"code": "argumentNotAccepted", "name": "ProductVariantsBulkInput",
                                        "typeName": "InputObject", "argumentName": k}),
        ),
        (Bad::NotEmulated(_), _) => gql::Error::new(p.explanation()),
        (bad, Some(leaf)) => {
            let shown = match bad {
                Bad::Coerce(v, _) => v.to_string(),
                _ => "null".to_string(),
            };
            let ty = if leaf == "id" { "ID" } else { "Money" };
            gql::Error::new(format!(
                "Argument '{leaf}' on InputObject 'ProductVariantsBulkInput' has an invalid value ({shown}). Expected type '{ty}'."
            ))
            .with_extensions(json!({"code": "argumentLiteralsIncompatible", "typeName": "InputObject",
                                    "argumentName": leaf}))
        }
        _ => gql::Error::new(format!(
            "Argument '{arg}' on Field '{}' has an invalid value ({}). Expected type '{arg_ty}'.",
            f.name,
            literal.display()
        ))
        .with_extensions(json!({"code": "argumentLiteralsIncompatible", "typeName": "Field", "argumentName": arg})),
    }
}

// ---- running it -------------------------------------------------------------------------------

/// The number in `gid://shopify/{kind}/N`.
fn gid(v: &Value, kind: &str) -> Option<u64> {
    let rest = v
        .as_str()?
        .strip_prefix("gid://shopify/")?
        .strip_prefix(kind)?
        .strip_prefix('/')?;
    rest.parse().ok()
}

fn user_error(field: Value, message: &str, code: &str) -> Value {
    json!({"field": field, "message": message, "code": code})
}

/// The price to store (two decimals), or why not. `floor` is the shop's minimum (prices only).
fn price_text(text: &str, field: &Value, floor: Option<Decimal>) -> Result<String, Value> {
    let compare = floor.is_none();
    let invalid = |message: &str| user_error(field.clone(), message, "INVALID");
    let d = Decimal::from_str(text).map_err(|_| invalid("Price must be less than 1000000000000000000"))?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(if compare {
            user_error(
                field.clone(),
                "Compare at price cannot take a negative value",
                "NEGATIVE_PRICE_VALUE",
            )
        } else {
            user_error(
                field.clone(),
                "Price must be greater than or equal to 0",
                "GREATER_THAN_OR_EQUAL_TO",
            )
        });
    }
    if let Some(min) = floor.filter(|min| d < *min) {
        let message = format!("Price must be greater than or equal to {min}");
        return Err(user_error(field.clone(), &message, "GREATER_THAN_OR_EQUAL_TO"));
    }
    if d.normalize().scale() > PRICE_DECIMALS {
        return Err(invalid("Price must have at most 2 decimal places"));
    }
    if d >= Decimal::from(1_000_000_000_000_000_000_i64) {
        return Err(invalid("Price must be less than 1000000000000000000"));
    }
    let mut d = d.normalize().abs();
    d.rescale(PRICE_DECIMALS);
    Ok(d.to_string())
}

fn updates(state: &State, m: &mut Shopify, shop: &str, calls: &[Update]) -> Value {
    let requested = MUTATION_COST * calls.len() as u64;
    if let Err(refused) = catalog::charge(state, m, shop, requested) {
        return refused;
    }
    let mut data = Map::new();
    for c in calls {
        state.count("shopify productVariantsBulkUpdate calls");
        data.insert(c.key.clone(), update(state, m, shop, c));
    }
    let available = m.spend(shop, 0.0).unwrap_or_else(|a| a);
    json!({"data": data, "extensions": catalog::cost_json(m, requested, requested, available)})
}

/// A checked write: the variant's index in the shop's catalog, the new price and compareAtPrice.
type Write = (usize, Option<String>, Option<Option<String>>);

/// One productVariantsBulkUpdate: its payload.
fn update(state: &State, m: &mut Shopify, shop: &str, c: &Update) -> Value {
    let product = gid(&c.product_id, "Product")
        .filter(|id| m.catalog.shops.get(shop).is_some_and(|s| s.products.contains_key(id)));
    let Some(product) = product else {
        let e = user_error(json!(["productId"]), "Product does not exist", "PRODUCT_DOES_NOT_EXIST");
        return payload(m, shop, &c.selection, None, None, &[e]);
    };
    let (writes, errors) = match m.catalog.shops.get(shop) {
        Some(cat) => check_variants(cat, product, &c.variants),
        None => (Vec::new(), Vec::new()),
    };
    if !errors.is_empty() && !c.allow_partial {
        return payload(m, shop, &c.selection, Some(product), None, &errors);
    }
    let mut updated = Vec::with_capacity(writes.len());
    if let Some(cat) = m.catalog.shops.get_mut(shop) {
        for (k, price, compare) in writes {
            let wrote = price.is_some() || compare.is_some();
            let v = &mut cat.variants[k];
            if let Some(p) = price {
                v.price = p;
            }
            if let Some(cmp) = compare {
                v.compare_at_price = cmp;
            }
            if wrote {
                v.price_writes += 1;
                cat.price_writes += 1;
                state.count("shopify price writes");
            }
            updated.push(k);
        }
    }
    payload(m, shop, &c.selection, Some(product), Some(&updated), &errors)
}

/// The writes the inputs ask for and the userErrors of those that cannot be made.
fn check_variants(cat: &catalog::ShopCatalog, product: u64, inputs: &[Value]) -> (Vec<Write>, Vec<Value>) {
    let (mut writes, mut errors) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    let floor = Some(cat.min_price.unwrap_or_default());
    for (i, input) in inputs.iter().enumerate() {
        let field = |name: &str| json!(["variants", i.to_string(), name]);
        let before = errors.len();
        let index = match input.get("id").filter(|v| !v.is_null()) {
            None => {
                errors.push(user_error(
                    field("id"),
                    "Product variant is missing ID attribute",
                    "PRODUCT_VARIANT_ID_MISSING",
                ));
                None
            }
            Some(id) => {
                let found = gid(id, "ProductVariant")
                    .and_then(|n| cat.variants.binary_search_by_key(&n, |v| v.id).ok())
                    .filter(|&k| cat.variants[k].product_id == product);
                match found {
                    None => {
                        errors.push(user_error(
                            field("id"),
                            "Product variant does not exist",
                            "PRODUCT_VARIANT_DOES_NOT_EXIST",
                        ));
                        None
                    }
                    Some(k) if !seen.insert(k) => {
                        errors.push(user_error(
                            field("id"),
                            "Product variant is given more than once",
                            "INVALID",
                        ));
                        None
                    }
                    Some(k) => Some(k),
                }
            }
        };
        let price = match input.get("price") {
            None => None,
            Some(Value::Null) => {
                errors.push(user_error(field("price"), "Price can't be blank", "BLANK"));
                None
            }
            Some(v) => price_text(v.as_str().unwrap_or(""), &field("price"), floor)
                .map_err(|e| errors.push(e))
                .ok(),
        };
        let compare = match input.get("compareAtPrice") {
            None => None,
            Some(Value::Null) => Some(None),
            Some(v) => price_text(v.as_str().unwrap_or(""), &field("compareAtPrice"), None)
                .map_err(|e| errors.push(e))
                .ok()
                .map(Some),
        };
        if let (Some(k), true) = (index, errors.len() == before) {
            writes.push((k, price, compare));
        }
    }
    (writes, errors)
}

/// The ProductVariantsBulkUpdatePayload for its selection.
fn payload(
    m: &Shopify,
    shop: &str,
    sel: &[gql::Field],
    product: Option<u64>,
    updated: Option<&[usize]>,
    errors: &[Value],
) -> Value {
    let cat = m.catalog.shops.get(shop);
    let render = Render {
        shop,
        products: cat.map(|c| &c.products),
        levels: &m.levels,
    };
    let mut out = Map::new();
    for f in sel {
        let sub = f.selection.as_deref().unwrap_or(&[]);
        let v = match f.name.as_str() {
            "__typename" => json!("ProductVariantsBulkUpdatePayload"),
            "product" => product
                .and_then(|id| cat?.products.get(&id))
                .map_or(Value::Null, |p| Render::product(sub, p)),
            "productVariants" => match (updated, cat) {
                (Some(ks), Some(c)) => ks.iter().map(|&k| render.variant(sub, &c.variants[k])).collect(),
                (Some(_), None) => json!([]),
                (None, _) => Value::Null,
            },
            "userErrors" => errors
                .iter()
                .map(|e| {
                    let mut o = Map::new();
                    for g in sub {
                        let x = match g.name.as_str() {
                            "__typename" => json!("ProductVariantsBulkUpdateUserError"),
                            name => e.get(name).cloned().unwrap_or(Value::Null),
                        };
                        o.insert(g.key().to_string(), x);
                    }
                    Value::Object(o)
                })
                .collect(),
            _ => Value::Null,
        };
        out.insert(f.key().to_string(), v);
    }
    Value::Object(out)
}

fn lookups(state: &State, m: &mut Shopify, shop: &str, items: &[Lookup]) -> Value {
    state.count("shopify graphql inventoryItem variant");
    let requested: u64 = items.iter().map(Lookup::requested).sum();
    if let Err(refused) = catalog::charge(state, m, shop, requested) {
        return refused;
    }
    let mut data = Map::new();
    let mut actual = 0;
    {
        let cat = m.catalog.shops.get(shop);
        let render = Render {
            shop,
            products: cat.map(|c| &c.products),
            levels: &m.levels,
        };
        for l in items {
            let variant = gid(&l.id, "InventoryItem")
                .and_then(|item| cat.and_then(|c| c.variants.iter().find(|v| v.inventory_item_id == item)));
            let Some(variant) = variant else {
                actual += 1;
                data.insert(l.key.clone(), Value::Null);
                continue;
            };
            actual += l.fixed_cost;
            let mut out = Map::new();
            for g in &l.selection {
                let sub = g.selection.as_deref().unwrap_or(&[]);
                let x = match g.name.as_str() {
                    "__typename" => json!("InventoryItem"),
                    "id" => json!(format!("gid://shopify/InventoryItem/{}", variant.inventory_item_id)),
                    "sku" => json!(variant.sku),
                    "tracked" => json!(true),
                    "variant" => render.variant(sub, variant),
                    "variants" => {
                        let (first, after, node_cost) = l.connections.get(g.key()).copied().unwrap_or((0, None, 1));
                        let page: Vec<Variant> = std::iter::once(variant)
                            .filter(|v| after.is_none_or(|a| v.id > a))
                            .take(first)
                            .cloned()
                            .collect();
                        actual += 2 + page.len() as u64 * node_cost;
                        let info = PageInfo {
                            has_next: false,
                            has_previous: after.is_some(),
                        };
                        render.connection(sub, &page, &info)
                    }
                    _ => Value::Null,
                };
                out.insert(g.key().to_string(), x);
            }
            data.insert(l.key.clone(), Value::Object(out));
        }
    }
    let available = m.refund(shop, requested.saturating_sub(actual) as f64);
    json!({"data": data, "extensions": catalog::cost_json(m, requested, actual, available)})
}

// ---- admin (/_admin/shopify/...) --------------------------------------------------------------

/// Admin endpoints, merged into the shopify admin router.
pub fn admin_router() -> Router<Arc<State>> {
    Router::new()
        .route("/variants/{id}", get(admin_variant))
        .route("/shops/{shop}/prices", get(admin_shop_prices))
        .route("/shops/{shop}/min_price", post(admin_min_price))
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": what}))).into_response()
}

/// `GET /variants/{id}` (the number of the gid): `{"shop", "id", "product_id", "sku", "price",
/// "compare_at_price", "price_writes"}`.
async fn admin_variant(AxState(state): AxState<Arc<State>>, Path(id): Path<u64>) -> Response {
    let m = state.shopify.lock();
    for (shop, cat) in &m.catalog.shops {
        if let Ok(k) = cat.variants.binary_search_by_key(&id, |v| v.id) {
            let v = &cat.variants[k];
            return Json(
                json!({"shop": shop, "id": format!("gid://shopify/ProductVariant/{}", v.id),
                               "product_id": format!("gid://shopify/Product/{}", v.product_id), "sku": v.sku,
                               "price": v.price, "compare_at_price": v.compare_at_price,
                               "price_writes": v.price_writes}),
            )
            .into_response();
        }
    }
    not_found("no such variant")
}

/// `GET /shops/{shop}/prices`: `{"price_writes", "min_price"}`.
async fn admin_shop_prices(AxState(state): AxState<Arc<State>>, Path(shop): Path<String>) -> Response {
    let m = state.shopify.lock();
    match m.catalog.shops.get(&shop) {
        Some(c) => Json(json!({"price_writes": c.price_writes, "min_price": c.min_price.map(|d| d.to_string())}))
            .into_response(),
        None => not_found("no such shop"),
    }
}

/// `POST /shops/{shop}/min_price` `{"min_price": "5.00" | null}`: prices below it are refused
/// with `GREATER_THAN_OR_EQUAL_TO`; null removes it.
async fn admin_min_price(
    AxState(state): AxState<Arc<State>>,
    Path(shop): Path<String>,
    Json(b): Json<Value>,
) -> Response {
    let min = match b.get("min_price") {
        Some(Value::Null) => None,
        Some(Value::String(s)) if crate::catalog_rule::is_decimal(s) && Decimal::from_str(s).is_ok() => {
            Decimal::from_str(s).ok()
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "min_price must be decimal text such as \"5.00\", or null"})),
            )
                .into_response()
        }
    };
    state.shopify.lock().catalog.shops.entry(shop).or_default().min_price = min;
    Json(json!({"ok": true, "min_price": min.map(|d| d.to_string())})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    const SHOP: &str = "price.myshopify.com";
    const MUTATION: &str =
        "mutation Prices($productId: ID!, $variants: [ProductVariantsBulkInput!]!, $partial: Boolean) {
      productVariantsBulkUpdate(productId: $productId, variants: $variants, allowPartialUpdates: $partial) {
        product { id }
        productVariants { id price compareAtPrice }
        userErrors { field message code }
      }
    }";
    // Products 1000000..=1000002; product 0 has variants 1000003..=1000005, product 1 has 1000006,
    // product 2 has 1000007..=1000009; unit n's inventory item is 1000009 + n.
    const P0: &str = "gid://shopify/Product/1000000";

    fn setup() -> (Arc<State>, HeaderMap) {
        let state = Arc::new(State::default());
        let mut m = state.shopify.lock();
        m.apps.insert("c".into(), "s".into());
        let g = m.grant(SHOP, "c", false);
        m.bucket_max = 1e9;
        m.restore_rate = 1e9;
        let spec = catalog::Spec::from_json(&json!({"shop": SHOP, "products": 3, "variations": 3,
                                                    "variations_every": 2, "price": "100.00"}))
        .unwrap();
        catalog::generate(&mut m, &spec).unwrap();
        drop(m);
        let mut h = HeaderMap::new();
        let token = g["access_token"].as_str().unwrap_or_default();
        h.insert("x-shopify-access-token", HeaderValue::from_str(token).unwrap());
        (state, h)
    }

    fn variant(id: u64) -> String {
        format!("gid://shopify/ProductVariant/{id}")
    }

    async fn call(state: &Arc<State>, h: &HeaderMap, version: &str, body: Value) -> Value {
        let r = crate::shopify::graphql(AxState(state.clone()), Path(version.into()), h.clone(), Json(body)).await;
        assert_eq!(r.status(), 200);
        let b = axum::body::to_bytes(r.into_body(), 1 << 24).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    async fn write(state: &Arc<State>, h: &HeaderMap, product: &str, variants: Value, partial: bool) -> Value {
        let vars = json!({"productId": product, "variants": variants, "partial": partial});
        call(state, h, "2026-10", json!({"query": MUTATION, "variables": vars})).await
    }

    fn stored(state: &State, id: u64) -> (String, Option<String>, u64) {
        let m = state.shopify.lock();
        let v = m.catalog.shops[SHOP].variants.iter().find(|v| v.id == id).unwrap();
        (v.price.clone(), v.compare_at_price.clone(), v.price_writes)
    }

    async fn admin_json(r: Response) -> Value {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn a_price_write_is_stored_and_read_back() {
        let (state, h) = setup();
        let v = write(
            &state,
            &h,
            P0,
            json!([{"id": variant(1_000_004), "price": "19.9", "compareAtPrice": "25"}]),
            false,
        )
        .await;
        assert_eq!(
            v["data"]["productVariantsBulkUpdate"],
            json!({"product": {"id": P0},
                   "productVariants": [{"id": variant(1_000_004), "price": "19.90", "compareAtPrice": "25.00"}],
                   "userErrors": []}),
            "{v}"
        );
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], MUTATION_COST);
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], MUTATION_COST);
        // the catalog serves the stored price
        let q = "{ productVariants(first: 3) { nodes { id price compareAtPrice } } }";
        let page = call(&state, &h, "2026-10", json!({ "query": q })).await;
        let nodes = &page["data"]["productVariants"]["nodes"];
        assert_eq!(nodes[0]["price"], "100.00");
        assert_eq!(
            (&nodes[1]["price"], &nodes[1]["compareAtPrice"]),
            (&json!("19.90"), &json!("25.00"))
        );
        // the admin reads
        let r = admin_variant(AxState(state.clone()), Path(1_000_004)).await;
        let a = admin_json(r).await;
        assert_eq!(
            (
                a["price"].clone(),
                a["compare_at_price"].clone(),
                a["price_writes"].clone()
            ),
            (json!("19.90"), json!("25.00"), json!(1))
        );
        assert_eq!(a["product_id"], P0);
        let r = admin_shop_prices(AxState(state.clone()), Path(SHOP.into())).await;
        assert_eq!(admin_json(r).await, json!({"price_writes": 1, "min_price": null}));
        assert_eq!(admin_variant(AxState(state.clone()), Path(42)).await.status(), 404);
        // compareAtPrice null clears it; an input with only the id is no write
        let v = write(
            &state,
            &h,
            P0,
            json!([{"id": variant(1_000_004), "compareAtPrice": null}, {"id": variant(1_000_005)}]),
            false,
        )
        .await;
        assert_eq!(v["data"]["productVariantsBulkUpdate"]["userErrors"], json!([]), "{v}");
        assert_eq!(stored(&state, 1_000_004), ("19.90".into(), None, 2));
        assert_eq!(stored(&state, 1_000_005), ("100.00".into(), None, 0));
        assert_eq!(state.counters.lock().get("shopify price writes").copied(), Some(2));
    }

    #[tokio::test]
    async fn one_bad_variant_fails_the_call_unless_partial_updates_are_allowed() {
        let (state, h) = setup();
        let inputs = json!([{"id": variant(1_000_003), "price": "10.00"}, {"id": variant(1_000_004), "price": "-1"}]);
        let v = write(&state, &h, P0, inputs.clone(), false).await;
        let p = &v["data"]["productVariantsBulkUpdate"];
        assert_eq!(
            p["userErrors"],
            json!([{"field": ["variants", "1", "price"], "message": "Price must be greater than or equal to 0",
                    "code": "GREATER_THAN_OR_EQUAL_TO"}])
        );
        assert_eq!(
            (p["productVariants"].clone(), p["product"]["id"].clone()),
            (Value::Null, json!(P0))
        );
        assert_eq!(stored(&state, 1_000_003).0, "100.00");
        let v = write(&state, &h, P0, inputs, true).await;
        let p = &v["data"]["productVariantsBulkUpdate"];
        assert_eq!(p["userErrors"][0]["code"], "GREATER_THAN_OR_EQUAL_TO");
        assert_eq!(
            p["productVariants"],
            json!([{"id": variant(1_000_003), "price": "10.00", "compareAtPrice": null}])
        );
        assert_eq!(stored(&state, 1_000_003).0, "10.00");
        assert_eq!(stored(&state, 1_000_004).0, "100.00");
    }

    #[tokio::test]
    async fn each_refusal_has_its_user_error() {
        let (state, h) = setup();
        let cases = [
            (
                json!({"id": variant(1_000_003), "compareAtPrice": "-0.01"}),
                "compareAtPrice",
                "NEGATIVE_PRICE_VALUE",
            ),
            (json!({"id": variant(1_000_003), "price": "1.999"}), "price", "INVALID"),
            (
                json!({"id": variant(1_000_003), "price": "1000000000000000000"}),
                "price",
                "INVALID",
            ),
            (json!({"id": variant(1_000_003), "price": null}), "price", "BLANK"),
            (json!({"price": "1.00"}), "id", "PRODUCT_VARIANT_ID_MISSING"),
            // a variant of another product, and one that does not exist
            (
                json!({"id": variant(1_000_007), "price": "1.00"}),
                "id",
                "PRODUCT_VARIANT_DOES_NOT_EXIST",
            ),
            (
                json!({"id": variant(77), "price": "1.00"}),
                "id",
                "PRODUCT_VARIANT_DOES_NOT_EXIST",
            ),
            (
                json!({"id": "gid://shopify/Product/1000003", "price": "1.00"}),
                "id",
                "PRODUCT_VARIANT_DOES_NOT_EXIST",
            ),
        ];
        for (input, field, code) in cases {
            let v = write(&state, &h, P0, json!([input]), false).await;
            let errors = &v["data"]["productVariantsBulkUpdate"]["userErrors"];
            assert_eq!(errors[0]["code"], code, "{input}: {v}");
            assert_eq!(errors[0]["field"], json!(["variants", "0", field]), "{input}");
        }
        // the same variant twice
        let twice = json!([{"id": variant(1_000_003), "price": "1.00"}, {"id": variant(1_000_003), "price": "2.00"}]);
        let v = write(&state, &h, P0, twice, false).await;
        let errors = &v["data"]["productVariantsBulkUpdate"]["userErrors"];
        assert_eq!(
            errors,
            &json!([{"field": ["variants", "1", "id"], "message": "Product variant is given more than once",
                                     "code": "INVALID"}])
        );
        // an unknown product: nothing else is looked at, partial or not
        for product in [
            "gid://shopify/Product/999",
            "gid://shopify/ProductVariant/1000003",
            "1000000",
        ] {
            let v = write(
                &state,
                &h,
                product,
                json!([{"id": variant(1_000_003), "price": "1.00"}]),
                true,
            )
            .await;
            assert_eq!(
                v["data"]["productVariantsBulkUpdate"],
                json!({"product": null, "productVariants": null, "userErrors": [
                    {"field": ["productId"], "message": "Product does not exist", "code": "PRODUCT_DOES_NOT_EXIST"}]}),
                "{product}"
            );
        }
        assert_eq!(stored(&state, 1_000_003), ("100.00".into(), None, 0));
    }

    #[tokio::test]
    async fn the_admin_minimum_price_is_enforced() {
        let (state, h) = setup();
        let set = |min: Value| {
            admin_min_price(
                AxState(state.clone()),
                Path(SHOP.into()),
                Json(json!({"min_price": min})),
            )
        };
        assert_eq!(set(json!(5)).await.status(), 400);
        assert_eq!(set(json!("-1")).await.status(), 400);
        assert_eq!(set(json!("5.00")).await.status(), 200);
        let v = write(
            &state,
            &h,
            P0,
            json!([{"id": variant(1_000_003), "price": "4.99"}]),
            false,
        )
        .await;
        assert_eq!(
            v["data"]["productVariantsBulkUpdate"]["userErrors"],
            json!([{"field": ["variants", "0", "price"], "message": "Price must be greater than or equal to 5.00",
                    "code": "GREATER_THAN_OR_EQUAL_TO"}])
        );
        // compareAtPrice is not held to it; the minimum itself is accepted
        let ok = json!([{"id": variant(1_000_003), "price": "5", "compareAtPrice": "1.00"}]);
        let v = write(&state, &h, P0, ok, false).await;
        assert_eq!(v["data"]["productVariantsBulkUpdate"]["userErrors"], json!([]));
        assert_eq!(stored(&state, 1_000_003).0, "5.00");
        let r = admin_shop_prices(AxState(state.clone()), Path(SHOP.into())).await;
        assert_eq!(admin_json(r).await, json!({"price_writes": 1, "min_price": "5.00"}));
        assert_eq!(set(Value::Null).await.status(), 200);
        let v = write(&state, &h, P0, json!([{"id": variant(1_000_003), "price": "0"}]), false).await;
        assert_eq!(v["data"]["productVariantsBulkUpdate"]["userErrors"], json!([]));
    }

    #[tokio::test]
    async fn money_is_a_string_as_graphql_coerces_it() {
        let (state, h) = setup();
        for (price, shown) in [
            (json!(19.99), "19.99"),
            (json!("1,5"), "\"1,5\""),
            (json!("1e3"), "\"1e3\""),
        ] {
            let v = write(
                &state,
                &h,
                P0,
                json!([{"id": variant(1_000_003), "price": price}]),
                false,
            )
            .await;
            assert!(v.get("data").is_none(), "{v}");
            let explanation = format!("Could not coerce value {shown} to Money");
            assert_eq!(
                v["errors"][0]["message"],
                format!(
                    "Variable $variants of type [ProductVariantsBulkInput!]! was provided invalid value for 0.price ({explanation})"
                )
            );
            assert_eq!(
                v["errors"][0]["extensions"]["problems"],
                json!([{"path": [0, "price"], "explanation": explanation}])
            );
            assert_eq!(v["extensions"]["cost"]["actualQueryCost"], 0);
        }
        let v = write(&state, &h, P0, json!([{"id": variant(1_000_003), "cost": "1"}]), false).await;
        assert_eq!(
            v["errors"][0]["extensions"]["problems"][0]["explanation"],
            "Field is not defined on ProductVariantsBulkInput"
        );
        // a literal number in the document
        let literal = "mutation { productVariantsBulkUpdate(productId: \"gid://shopify/Product/1000000\",
            variants: [{id: \"gid://shopify/ProductVariant/1000003\", price: 19.99}]) { userErrors { code } } }";
        let v = call(&state, &h, "2026-10", json!({ "query": literal })).await;
        assert_eq!(
            v["errors"],
            json!([{"message": "Argument 'price' on InputObject 'ProductVariantsBulkInput' has an invalid value (19.99). Expected type 'Money'.",
                    "locations": [{"line": 2, "column": 13}],
                    "path": ["mutation", "productVariantsBulkUpdate", "variants", "0", "price"],
                    "extensions": {"code": "argumentLiteralsIncompatible", "typeName": "InputObject", "argumentName": "price"}}])
        );
        // the same as a string literal works (and a single object is a list of one)
        let literal = literal
            .replace("[{id:", "{id:")
            .replace("price: 19.99}]", "price: \"19.99\"}");
        let v = call(&state, &h, "2026-10", json!({ "query": literal })).await;
        assert_eq!(v["data"]["productVariantsBulkUpdate"]["userErrors"], json!([]), "{v}");
        assert_eq!(stored(&state, 1_000_003).0, "19.99");
    }

    #[tokio::test]
    async fn at_most_250_variants_per_call() {
        let (state, h) = setup();
        let spec = catalog::Spec::from_json(&json!({"shop": SHOP, "products": 1, "first_id": 5_000_000,
                                                    "variations": 251, "variations_every": 1}))
        .unwrap();
        catalog::generate(&mut state.shopify.lock(), &spec).unwrap();
        let inputs = |n: u64| -> Value {
            (0..n)
                .map(|i| json!({"id": variant(5_000_001 + i), "price": "7.50"}))
                .collect()
        };
        let v = write(&state, &h, "gid://shopify/Product/5000000", inputs(251), false).await;
        assert!(v.get("data").is_none(), "{v}");
        assert_eq!(v["errors"][0]["extensions"]["code"], "MAX_INPUT_SIZE_EXCEEDED");
        assert_eq!(
            v["errors"][0]["message"],
            "The input array size of 251 is greater than the maximum allowed of 250."
        );
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], 0);
        let v = write(&state, &h, "gid://shopify/Product/5000000", inputs(250), false).await;
        let p = &v["data"]["productVariantsBulkUpdate"];
        assert_eq!(p["userErrors"], json!([]));
        assert_eq!(p["productVariants"].as_array().map(Vec::len), Some(250));
        assert_eq!(stored(&state, 5_000_250).0, "7.50");
        assert_eq!(stored(&state, 5_000_251).0, "100.00");
    }

    #[tokio::test]
    async fn the_document_is_checked_like_graphql_ruby() {
        let (state, h) = setup();
        let errors = |v: &Value| v["errors"].as_array().cloned().unwrap_or_default();
        // a nullable variable for an ID! argument
        let q = MUTATION.replace("$productId: ID!", "$productId: ID");
        let v = call(
            &state,
            &h,
            "2026-10",
            json!({"query": q, "variables": {"productId": P0, "variants": []}}),
        )
        .await;
        assert_eq!(
            errors(&v)[0]["message"],
            "Nullability mismatch on variable $productId and argument productId (ID / ID!)"
        );
        assert_eq!(errors(&v)[0]["extensions"]["code"], "variableMismatch");
        // a type the schema does not have, an unused variable, a missing argument, an unknown field
        let q = "mutation M($v: [ProductVariantInput!]!, $x: Int) {
            productVariantsBulkUpdate(productId: \"gid://shopify/Product/1000000\") { userErrors { code extra } } }";
        let v = call(&state, &h, "2026-10", json!({"query": q, "variables": {"v": []}})).await;
        let codes: Vec<Value> = errors(&v).iter().map(|e| e["extensions"]["code"].clone()).collect();
        assert_eq!(
            codes,
            json!([
                "variableRequiresValidType",
                "missingRequiredArguments",
                "undefinedField",
                "variableNotUsed",
                "variableNotUsed"
            ])
            .as_array()
            .cloned()
            .unwrap()
        );
        assert_eq!(
            errors(&v)[0]["message"],
            "ProductVariantInput isn't a defined input type (on $v)"
        );
        assert_eq!(
            errors(&v)[1]["message"],
            "Field 'productVariantsBulkUpdate' is missing required arguments: variants"
        );
        assert_eq!(
            errors(&v)[2]["message"],
            "Field 'extra' doesn't exist on type 'ProductVariantsBulkUpdateUserError'"
        );
        // an unknown argument; no selection
        let q = "mutation { productVariantsBulkUpdate(productId: \"x\", variants: [], force: true) }";
        let v = call(&state, &h, "2026-10", json!({ "query": q })).await;
        assert_eq!(
            errors(&v)[0]["message"],
            "Field 'productVariantsBulkUpdate' doesn't accept argument 'force'"
        );
        assert_eq!(errors(&v)[1]["extensions"]["code"], "selectionMismatch");
        // a parse error
        let v = call(
            &state,
            &h,
            "2026-10",
            json!({"query": "mutation { productVariantsBulkUpdate( }"}),
        )
        .await;
        assert!(
            errors(&v)[0]["message"].as_str().unwrap().starts_with("Parse error"),
            "{v}"
        );
        // nothing of it was charged or written
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 0);
        assert_eq!(
            state.counters.lock().get("shopify productVariantsBulkUpdate calls"),
            None
        );
    }

    #[tokio::test]
    async fn tokens_and_the_cost_bucket_apply() {
        let (state, h) = setup();
        let body = json!({"query": MUTATION, "variables": {"productId": P0, "variants": []}});
        let r = crate::shopify::graphql(
            AxState(state.clone()),
            Path("2026-10".into()),
            HeaderMap::new(),
            Json(body.clone()),
        )
        .await;
        assert_eq!(r.status(), 401);
        let v = admin_json(r).await;
        assert_eq!(
            v,
            json!({"errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"})
        );
        {
            let mut m = state.shopify.lock();
            m.bucket_max = 15.0;
            m.restore_rate = 0.001;
        }
        let first = call(&state, &h, "2026-10", body.clone()).await;
        assert!(first["data"].is_object(), "{first}");
        let v = call(&state, &h, "2026-10", body).await;
        assert!(v.get("data").is_none());
        assert_eq!(v["errors"][0]["extensions"]["code"], "THROTTLED");
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], MUTATION_COST);
        assert!(
            v["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"]
                .as_f64()
                .unwrap()
                < 10.0
        );
    }

    #[tokio::test]
    async fn an_inventory_item_finds_its_variant_by_api_version() {
        let (state, h) = setup();
        // unit 2 is variant 1000004 of product 1000000, inventory item 1000011
        let modern =
            "query($id: ID!) { inventoryItem(id: $id) { id variants(first: 5) { nodes { id product { id } } } } }";
        let old = "query($id: ID!) { inventoryItem(id: $id) { variant { id product { id } } } }";
        let item = json!({"id": "gid://shopify/InventoryItem/1000011"});
        let v = call(&state, &h, "2026-01", json!({"query": modern, "variables": item})).await;
        assert_eq!(
            v["data"]["inventoryItem"],
            json!({"id": "gid://shopify/InventoryItem/1000011",
                   "variants": {"nodes": [{"id": variant(1_000_004), "product": {"id": P0}}]}}),
            "{v}"
        );
        // 1 + 2 + 5 × 2 requested; 1 + 2 + 1 × 2 returned
        assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 13);
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], 5);
        // before 2026-01 the connection does not exist
        let v = call(&state, &h, "2025-10", json!({"query": modern, "variables": item})).await;
        assert!(v.get("data").is_none());
        assert_eq!(
            v["errors"][0],
            json!({"message": "Field 'variants' doesn't exist on type 'InventoryItem'",
                   "locations": [{"line": 1, "column": 47}], "path": ["query", "inventoryItem", "variants"],
                   "extensions": {"code": "undefinedField", "typeName": "InventoryItem", "fieldName": "variants"}})
        );
        // the single variant: every version (deprecated, not removed, in 2026-01)
        for version in ["2025-10", "2026-04"] {
            let v = call(&state, &h, version, json!({"query": old, "variables": item})).await;
            assert_eq!(
                v["data"]["inventoryItem"]["variant"],
                json!({"id": variant(1_000_004), "product": {"id": P0}})
            );
            assert_eq!(v["extensions"]["cost"]["requestedQueryCost"], 3);
        }
        // unknown: null, 1 point
        let unknown = json!({"id": "gid://shopify/InventoryItem/5"});
        let v = call(&state, &h, "2026-10", json!({"query": old, "variables": unknown})).await;
        assert_eq!(v["data"], json!({"inventoryItem": null}));
        assert_eq!(v["extensions"]["cost"]["actualQueryCost"], 1);
        // several at once, aliased; a bad page size
        let two = "{ a: inventoryItem(id: \"gid://shopify/InventoryItem/1000010\") { variant { id } }
                     b: inventoryItem(id: \"gid://shopify/InventoryItem/1000015\") { variants(first: 1) { nodes { id } } } }";
        let v = call(&state, &h, "2026-10", json!({ "query": two })).await;
        assert_eq!(v["data"]["a"]["variant"]["id"], variant(1_000_003));
        assert_eq!(v["data"]["b"]["variants"]["nodes"][0]["id"], variant(1_000_008));
        let v = call(
            &state,
            &h,
            "2026-10",
            json!({"query": two.replace("first: 1", "first: 0")}),
        )
        .await;
        assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST");
        // the level read still goes to inventorySetQuantities' neighbour
        let level = "query($id: ID!, $locationId: ID!) { inventoryItem(id: $id) {
            inventoryLevel(locationId: $locationId) { quantities(names: [\"available\"]) { name quantity } } } }";
        let vars = json!({"id": "gid://shopify/InventoryItem/1000011", "locationId": "gid://shopify/Location/1"});
        let v = call(&state, &h, "2026-10", json!({"query": level, "variables": vars})).await;
        assert_eq!(
            v["data"]["inventoryItem"]["inventoryLevel"]["quantities"][0]["quantity"],
            5
        );
    }
}
