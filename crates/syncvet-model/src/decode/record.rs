//! Reading one record: keys matched against the entity's fields, each value
//! parsed straight into its typed staging cell, no `serde_json::Value` tree.
//!
//! A serde visitor walks the record's object. Known keys go through a seed
//! that coerces the value as it is parsed; unknown keys are skipped (serde
//! skips iteratively, so a hostile, deeply nested value cannot exhaust the
//! stack) and remembered for the drift counts. The first problem stops the
//! record: the visitor notes the field and the reason in the [`Row`] and
//! returns an error to unwind serde, and the page keeps the raw text as the
//! reject.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::cell::{self, Cell};
use crate::{Entity, FieldRole, FieldType, Member};

/// Where a JSON key leads.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// To the field of that index in `Entity::fields`.
    Field(usize),
    /// To the nested object of that index in `RecordLayout::objects`.
    Object(usize),
}

/// The keys of one JSON object level, in catalog order.
#[derive(Debug, Default)]
struct KeyIndex {
    keys: Vec<(Box<str>, Route)>,
    by_key: HashMap<Box<str>, usize>,
}

impl KeyIndex {
    fn push(&mut self, key: &str, target: Route) {
        self.by_key.insert(key.into(), self.keys.len());
        self.keys.push((key.into(), target));
    }

    /// Finds `key`, trying the key after the previous match first: a source
    /// writes its keys in one order, so most lookups are one comparison.
    fn find(&self, key: &str, next: &mut usize) -> Option<Route> {
        let at = match self.keys.get(*next) {
            Some((k, _)) if **k == *key => *next,
            _ => *self.by_key.get(key)?,
        };
        *next = at + 1;
        Some(self.keys[at].1)
    }
}

/// A nested object (`primaryVet`) and its keys.
#[derive(Debug)]
struct NestedObject {
    key: Box<str>,
    index: KeyIndex,
}

/// How the records of one entity are read, computed once per decoder.
#[derive(Debug)]
pub(crate) struct RecordLayout {
    pub(crate) entity: Arc<Entity>,
    top: KeyIndex,
    objects: Vec<NestedObject>,
    source_key: Option<usize>,
}

impl RecordLayout {
    pub(crate) fn new(entity: Arc<Entity>) -> RecordLayout {
        let mut top = KeyIndex::default();
        let mut objects: Vec<NestedObject> = Vec::new();
        for member in entity.members() {
            match member {
                Member::Field(i) => top.push(&entity.fields[*i].key, Route::Field(*i)),
                Member::Object { key, fields } => {
                    top.push(key, Route::Object(objects.len()));
                    let mut index = KeyIndex::default();
                    for (leaf, i) in fields {
                        index.push(leaf, Route::Field(*i));
                    }
                    objects.push(NestedObject {
                        key: key.as_str().into(),
                        index,
                    });
                }
            }
        }
        let source_key = entity
            .fields
            .iter()
            .position(|f| f.role == FieldRole::SourceKey);
        RecordLayout {
            entity,
            top,
            objects,
            source_key,
        }
    }
}

/// The record being read: one staging cell per field, reused across records.
#[derive(Debug)]
pub(crate) struct Row<'de> {
    /// By index in `Entity::fields`.
    pub(crate) cells: Vec<Cell<'de>>,
    /// Unknown keys, dotted for nested ones.
    unknown: Vec<Cow<'de, str>>,
    /// The first problem: (field key, reason).
    problem: Option<(String, String)>,
}

impl<'de> Row<'de> {
    pub(crate) fn new(plan: &RecordLayout) -> Row<'de> {
        Row {
            cells: vec![Cell::Absent; plan.entity.fields.len()],
            unknown: Vec::new(),
            problem: None,
        }
    }

    /// Reads `raw` (one element of the page's `items`) into the cells.
    /// The cells must be absent, as [`Columns::append`] and [`Row::clear`]
    /// leave them (but for the source key).
    ///
    /// [`Columns::append`]: super::builders::Columns::append
    pub(crate) fn read(
        &mut self,
        plan: &RecordLayout,
        raw: &'de str,
        source_id: &str,
    ) -> Result<(), Problem> {
        // The source key is no column, so appending the last record left it.
        if let Some(i) = plan.source_key {
            self.cells[i] = Cell::Absent;
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        let seed = ObjectSeed {
            plan,
            row: &mut *self,
            object: None,
        };
        if let Err(e) = de.deserialize_map(seed).and_then(|()| de.end()) {
            // The text is validated here for the first time: broken JSON
            // fails the page, a well-formed value of another shape is a reject.
            if e.is_syntax() || e.is_eof() {
                return Err(Problem::Malformed(e));
            }
            let (field, reason) = self
                .problem
                .take()
                .unwrap_or_else(|| (String::new(), "a record must be a JSON object".to_owned()));
            return Err(Problem::Reject(field, reason));
        }
        for (field, cell) in plan.entity.fields.iter().zip(&self.cells) {
            if field.required && cell.is_empty() {
                let what = if *cell == Cell::Absent {
                    "missing"
                } else {
                    "null"
                };
                return Err(Problem::Reject(
                    field.key.clone(),
                    format!("required field is {what}"),
                ));
            }
        }
        if let Some(i) = plan.source_key
            && let Cell::Str(id) = &self.cells[i]
            && id != source_id
        {
            return Err(Problem::Reject(
                plan.entity.fields[i].key.clone(),
                format!(
                    "the record belongs to {}, not to {} which is being read",
                    cell::quoted(id),
                    cell::quoted(source_id)
                ),
            ));
        }
        Ok(())
    }

    /// Forgets a rejected record's values.
    pub(crate) fn clear(&mut self) {
        self.cells.fill(Cell::Absent);
        self.unknown.clear();
        self.problem = None;
    }

    /// Adds this (accepted) record's unknown keys to the page's counts.
    pub(crate) fn count_unknown(&mut self, counts: &mut BTreeMap<String, u64>) {
        for key in self.unknown.drain(..) {
            match counts.get_mut(key.as_ref()) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(key.into_owned(), 1);
                }
            }
        }
    }

    /// Notes the record's problem (the first one wins) and unwinds serde.
    fn reject<E: de::Error>(
        &mut self,
        key: impl fmt::Display,
        reason: impl FnOnce() -> String,
    ) -> E {
        if self.problem.is_none() {
            self.problem = Some((key.to_string(), reason()));
        }
        E::custom("record rejected")
    }
}

/// Why a record was not accepted.
#[derive(Debug)]
pub(crate) enum Problem {
    /// The record is valid JSON but not a valid record: (field key, reason).
    Reject(String, String),
    /// The record is not valid JSON: the page is unusable.
    Malformed(serde_json::Error),
}

/// Reads a JSON object: the record itself or one of its nested objects.
struct ObjectSeed<'p, 'r, 'de> {
    plan: &'p RecordLayout,
    row: &'r mut Row<'de>,
    /// `None` for the record, else the index in `RecordLayout::objects`.
    object: Option<usize>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    /// A null nested object leaves all its fields null (the record itself
    /// is read with `deserialize_map`, which never gets here).
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (plan, row) = (self.plan, self.row);
        let (index, parent) = match self.object {
            None => (&plan.top, None),
            Some(o) => (&plan.objects[o].index, Some(&*plan.objects[o].key)),
        };
        let dotted = |key: &str| match parent {
            Some(p) => format!("{p}.{key}"),
            None => key.to_owned(),
        };
        let mut next = 0;
        while let Some(KeyText(key)) = map.next_key::<KeyText<'de>>()? {
            match index.find(&key, &mut next) {
                None => {
                    map.next_value::<IgnoredAny>()?;
                    row.unknown.push(match parent {
                        Some(_) => Cow::Owned(dotted(&key)),
                        None => key,
                    });
                }
                Some(Route::Object(o)) => {
                    let seed = ObjectSeed {
                        plan,
                        row: &mut *row,
                        object: Some(o),
                    };
                    if let Err(e) = map.next_value_seed(seed) {
                        let _: A::Error = row.reject(&key, || "expected an object or null".into());
                        return Err(e);
                    }
                }
                Some(Route::Field(i)) => {
                    let field = &plan.entity.fields[i];
                    let ty = field.field_type;
                    match map.next_value_seed(FieldSeed(ty)) {
                        Ok(Ok(value)) if matches!(row.cells[i], Cell::Absent) => {
                            row.cells[i] = value
                        }
                        Ok(Ok(_)) => {
                            return Err(row.reject(&field.key, || "the key appears twice".into()));
                        }
                        Ok(Err(reason)) => return Err(row.reject(&field.key, || reason)),
                        Err(e) => {
                            let _: A::Error = row
                                .reject(&field.key, || format!("expected {}", cell::describe(ty)));
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A JSON string key, borrowed from the page unless it had escapes.
struct KeyText<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for KeyText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor).map(KeyText)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// Reads one field's value as its type. `Ok(Err(reason))` is a value that
/// was read but cannot be coerced; `Err` is a value of the wrong shape (an
/// object, a list item that is not a string), which stops the parse.
struct FieldSeed(FieldType);

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Result<Cell<'de>, String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let ty = self.0;
        match ty {
            FieldType::String | FieldType::Date | FieldType::Timestamp => {
                d.deserialize_any(TextVisitor(ty))
            }
            FieldType::StringList => d.deserialize_any(ListVisitor),
            // Numbers are read from their JSON text: exact for any decimal
            // and any integer, where `f64` would round.
            FieldType::Int32
            | FieldType::Int64
            | FieldType::Float64
            | FieldType::Decimal { .. }
            | FieldType::Bool => {
                let raw = <&'de RawValue as de::Deserialize<'de>>::deserialize(d)?;
                Ok(from_raw(ty, raw.get()))
            }
        }
    }
}

/// A numeric or boolean field from the JSON text of its value.
fn from_raw(ty: FieldType, raw: &str) -> Result<Cell<'_>, String> {
    match raw.as_bytes().first() {
        Some(b'n') => Ok(Cell::Null),
        Some(b't') => cell::from_bool(ty, true),
        Some(b'f') => cell::from_bool(ty, false),
        Some(b'"') => {
            let inner = &raw[1..raw.len() - 1];
            let text = if inner.contains('\\') {
                Cow::Owned(serde_json::from_str::<String>(raw).map_err(|e| e.to_string())?)
            } else {
                Cow::Borrowed(inner)
            };
            cell::from_str(ty, text)
        }
        Some(b'{') => Err(format!("expected {}, got an object", cell::describe(ty))),
        Some(b'[') => Err(format!("expected {}, got a list", cell::describe(ty))),
        _ => cell::from_number_text(ty, raw),
    }
}

/// A string, date or timestamp field.
struct TextVisitor(FieldType);

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Result<Cell<'de>, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&cell::describe(self.0))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Cell::Null))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(cell::from_str(self.0, Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(cell::from_str(self.0, Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(cell::from_str(self.0, Cow::Owned(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(cell::from_bool(self.0, v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(cell::from_number_text(self.0, &v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(cell::from_number_text(self.0, &v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(cell::from_number_text(self.0, &v.to_string()))
    }
}

/// A `list<string>` field: null, or a list of strings and nulls.
struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Result<Cell<'de>, String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Cell::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Option<KeyText<'de>>>()? {
            items.push(item.map(|k| k.0));
        }
        Ok(Ok(Cell::List(items)))
    }
}
