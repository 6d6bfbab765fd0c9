//! The page decoder through its public API: generated records of every
//! entity round-trip to the expected typed values, and every kind of dirty
//! record becomes a reject while the clean ones of its page are kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
    Int64Array, ListArray, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::DataType;
use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat};
use syncvet_model::{
    Catalog, DecodeError, DecodedPage, Entity, FieldRole, FieldType, PageDecoder, Reject,
};

/// A deterministic xorshift generator: the tests need variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo) as u64 + 1) as i64
    }
}

/// A value as the tests expect to read it back from the batch.
#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Null,
    Str(String),
    Int32(i32),
    Int64(i64),
    Float64(f64),
    Decimal(i128),
    Bool(bool),
    Date(i32),
    Timestamp(i64),
    List(Vec<Option<String>>),
}

const TEXT_PIECES: &[&str] = &[
    "Rex",
    "Bella",
    "O'Hara",
    "é",
    "🐕",
    "\"quoted\"",
    "back\\slash",
    "line\nbreak",
    "tab\t",
    " ",
    "Ω",
    "12.50",
    "",
];

fn text(rng: &mut Rng) -> String {
    (0..rng.range(1, 4))
        .map(|_| TEXT_PIECES[rng.below(TEXT_PIECES.len() as u64) as usize])
        .collect()
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Writes a number either as a JSON number or as a string of it.
fn number(rng: &mut Rng, digits: String) -> String {
    if rng.chance(30) {
        json_string(&digits)
    } else {
        digits
    }
}

/// A JSON value of `ty` in one of the forms the decoder must accept, and the
/// value it must produce.
fn generate(rng: &mut Rng, ty: FieldType) -> (String, Expected) {
    match ty {
        FieldType::String => {
            let s = text(rng);
            (json_string(&s), Expected::Str(s))
        }
        FieldType::Int32 => {
            let v = match rng.below(4) {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => rng.range(-1000, 100_000) as i32,
            };
            (number(rng, v.to_string()), Expected::Int32(v))
        }
        FieldType::Int64 => {
            let v = match rng.below(3) {
                0 => i64::MIN,
                1 => i64::MAX,
                _ => rng.next() as i64,
            };
            (number(rng, v.to_string()), Expected::Int64(v))
        }
        FieldType::Float64 => {
            let v = (rng.next() as i64 % 10_000_000) as f64 / 1000.0;
            (number(rng, format!("{v}")), Expected::Float64(v))
        }
        FieldType::Decimal { precision, scale } => {
            let digits = rng.range(1, i64::from(precision)) as u32;
            let mut m = (u128::from(rng.next()) << 64 | u128::from(rng.next())) as i128;
            m = m.rem_euclid(10i128.pow(digits));
            if rng.chance(50) {
                m = -m;
            }
            let scale = scale as usize;
            let abs = format!("{:0>width$}", m.unsigned_abs(), width = scale + 1);
            let (int, frac) = abs.split_at(abs.len() - scale);
            let sign = if m < 0 { "-" } else { "" };
            let zeros = "0".repeat(rng.below(3) as usize);
            let text = if scale == 0 {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac}{zeros}")
            };
            (number(rng, text), Expected::Decimal(m))
        }
        FieldType::Bool => {
            let v = rng.chance(50);
            let json = match rng.below(3) {
                0 => v.to_string(),
                1 => json_string(&v.to_string()),
                _ => (v as u8).to_string(),
            };
            (json, Expected::Bool(v))
        }
        FieldType::Date => {
            let days = rng.range(-30_000, 30_000);
            let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
            (
                json_string(&date.format("%Y-%m-%d").to_string()),
                Expected::Date(days as i32),
            )
        }
        FieldType::Timestamp => {
            let micros = rng.range(-2_000_000_000_000_000, 4_000_000_000_000_000);
            let offset = FixedOffset::east_opt(rng.range(-48, 56) as i32 * 900).unwrap();
            let instant = DateTime::from_timestamp_micros(micros)
                .unwrap()
                .with_timezone(&offset);
            let form = if rng.chance(50) {
                SecondsFormat::AutoSi
            } else {
                SecondsFormat::Micros
            };
            (
                json_string(&instant.to_rfc3339_opts(form, rng.chance(50))),
                Expected::Timestamp(micros),
            )
        }
        FieldType::StringList => {
            let items: Vec<Option<String>> = (0..rng.below(4))
                .map(|_| (!rng.chance(20)).then(|| text(rng)))
                .collect();
            (
                serde_json::to_string(&items).unwrap(),
                Expected::List(items),
            )
        }
    }
}

/// Generated records of an entity, with the values each column must hold.
struct Generated {
    records: Vec<String>,
    /// Per record, column name → expected value.
    expected: Vec<BTreeMap<String, Expected>>,
}

fn generate_records(entity: &Entity, source: &str, n: usize, seed: u64) -> Generated {
    let mut rng = Rng(seed | 1);
    let mut records = Vec::new();
    let mut expected = Vec::new();
    for r in 0..n {
        // Top-level keys in order of first appearance, nested ones grouped.
        let mut top: Vec<(String, Option<String>)> = Vec::new();
        let mut nested: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut want = BTreeMap::new();
        for field in &entity.fields {
            let (json, value) = if field.role == FieldRole::SourceKey {
                (json_string(source), Expected::Null)
            } else if field.key == "id" {
                (
                    json_string(&format!("rec-{r}")),
                    Expected::Str(format!("rec-{r}")),
                )
            } else if field.required || rng.chance(70) {
                generate(&mut rng, field.field_type)
            } else if rng.chance(50) {
                ("null".to_owned(), Expected::Null)
            } else {
                (String::new(), Expected::Null) // absent
            };
            if field.role != FieldRole::SourceKey {
                let value = match (field.role, &value) {
                    (FieldRole::DeletedFlag, Expected::Null) => Expected::Bool(false),
                    _ => value,
                };
                want.insert(field.column.clone(), value);
            }
            match field.key.split_once('.') {
                Some((parent, child)) => {
                    if !top.iter().any(|(k, _)| k == parent) {
                        top.push((parent.to_owned(), None));
                    }
                    if !json.is_empty() {
                        let members = nested.entry(parent.to_owned()).or_default();
                        members.push(format!("{}:{json}", json_string(child)));
                    }
                }
                None if json.is_empty() => {}
                None => top.push((field.key.clone(), Some(json))),
            }
        }
        // Some sources write keys in another order than the catalog.
        if rng.chance(20) {
            top.reverse();
        }
        let members: Vec<String> = top
            .into_iter()
            .filter_map(|(key, json)| {
                let json = match json {
                    Some(json) => json,
                    None => match nested.remove(&key) {
                        Some(m) => format!("{{{}}}", m.join(",")),
                        None if rng.chance(50) => "null".to_owned(),
                        None => return None,
                    },
                };
                Some(format!("{}: {json}", json_string(&key)))
            })
            .collect();
        records.push(format!("{{{}}}", members.join(", ")));
        expected.push(want);
    }
    Generated { records, expected }
}

fn page(records: &[String]) -> Vec<u8> {
    format!("[\n  {}\n]", records.join(",\n  ")).into_bytes()
}

/// Reads one cell back through Arrow's own accessors.
fn actual(array: &ArrayRef, row: usize) -> Expected {
    if array.is_null(row) {
        return Expected::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Expected::Str(array.as_string::<i32>().value(row).to_owned()),
        DataType::Int32 => Expected::Int32(
            array
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Int64 => Expected::Int64(
            array
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Float64 => Expected::Float64(
            array
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Decimal128(..) => Expected::Decimal(
            array
                .as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Boolean => Expected::Bool(
            array
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(row),
        ),
        DataType::Date32 => Expected::Date(
            array
                .as_any()
                .downcast_ref::<Date32Array>()
                .unwrap()
                .value(row),
        ),
        DataType::Timestamp(..) => Expected::Timestamp(
            array
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .unwrap()
                .value(row),
        ),
        DataType::List(_) => {
            let list = array
                .as_any()
                .downcast_ref::<ListArray>()
                .unwrap()
                .value(row);
            let items = list.as_any().downcast_ref::<StringArray>().unwrap();
            Expected::List(items.iter().map(|s| s.map(str::to_owned)).collect())
        }
        other => panic!("unexpected column type {other}"),
    }
}

fn assert_rows_match(
    entity: &Entity,
    decoded: &DecodedPage,
    expected: &[&BTreeMap<String, Expected>],
) {
    let batch = &decoded.batch;
    assert_eq!(batch.schema(), entity.arrow_schema(), "{}", entity.name);
    assert_eq!(batch.num_rows(), expected.len(), "{}", entity.name);
    for (row, want) in expected.iter().enumerate() {
        for (column, value) in *want {
            let array = batch.column_by_name(column).unwrap();
            assert_eq!(
                &actual(array, row),
                value,
                "{}.{column} row {row}",
                entity.name
            );
        }
    }
}

fn decoder_for(entity: &str, source: &str) -> (Arc<Entity>, PageDecoder) {
    let entity = Catalog::embedded().entity(entity).unwrap().clone();
    let decoder = PageDecoder::new(entity.clone(), source);
    (entity, decoder)
}

#[test]
fn every_entity_round_trips_generated_records() {
    let catalog = Catalog::embedded();
    assert_eq!(catalog.entities().count(), 16);
    for (n, entity) in catalog.entities().enumerate() {
        let source = "src-0042";
        let generated = generate_records(entity, source, 300, 0x5eed + n as u64);
        let mut decoder = PageDecoder::new(entity.clone(), source);
        // Two pages through one decoder: the builders start over each page.
        for (half, range) in [(0, 0..150), (1, 150..300)] {
            let decoded = decoder
                .decode(&page(&generated.records[range.clone()]))
                .unwrap();
            assert_eq!(
                decoded.rejects,
                Vec::<Reject>::new(),
                "{} page {half}",
                entity.name
            );
            assert!(decoded.unknown_keys.is_empty(), "{}", entity.name);
            let expected: Vec<_> = generated.expected[range].iter().collect();
            assert_rows_match(entity, &decoded, &expected);
        }
    }
}

#[test]
fn records_located_by_the_client_decode_like_the_whole_array() {
    let catalog = Catalog::embedded();
    let entity = catalog.entity("patients").unwrap().clone();
    let generated = generate_records(&entity, "p-1", 50, 7);
    let items = page(&generated.records);
    let text = std::str::from_utf8(&items).unwrap();
    let mut ranges = Vec::new();
    let mut from = 0;
    for record in &generated.records {
        let start = from + text[from..].find(record.as_str()).unwrap();
        ranges.push(start..start + record.len());
        from = start + record.len();
    }
    let whole = PageDecoder::new(entity.clone(), "p-1")
        .decode(&items)
        .unwrap();
    let located = PageDecoder::new(entity.clone(), "p-1")
        .decode_records(&items, &ranges)
        .unwrap();
    assert_eq!(located.batch, whole.batch);
    assert_eq!(located.batch.num_rows(), 50);

    let outside = 0..items.len() + 1;
    let err = PageDecoder::new(entity, "p-1")
        .decode_records(&items, std::slice::from_ref(&outside))
        .unwrap_err();
    let text = syncvet_model::Chain(&err).to_string();
    assert!(text.contains("not within"), "{text}");
}

/// An entity with one field of every type, from a user catalog folder.
fn all_types() -> Arc<Entity> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("all_types.toml"),
        r#"entity = "all_types"
source = "pims"
[[fields]]
key = "s"
type = "string"
[[fields]]
key = "i32"
type = "int32"
[[fields]]
key = "i64"
type = "int64"
[[fields]]
key = "f64"
type = "float64"
[[fields]]
key = "dec"
type = "decimal(9,3)"
[[fields]]
key = "b"
type = "bool"
[[fields]]
key = "d"
type = "date"
[[fields]]
key = "ts"
type = "timestamp"
[[fields]]
key = "tags"
type = "list<string>"
[[fields]]
key = "owner.name"
type = "string"
required = true
"#,
    )
    .unwrap();
    Catalog::load(Some(dir.path()))
        .unwrap()
        .entity("all_types")
        .unwrap()
        .clone()
}

/// A valid `all_types` record with `extra` members added (a later duplicate
/// key overrides nothing: it is a reject).
fn all_types_record(extra: &str) -> String {
    let base = r#""id":"r1","lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","owner":{"name":"Ann"}"#;
    if extra.is_empty() {
        format!("{{{base}}}")
    } else {
        format!("{{{base},{extra}}}")
    }
}

/// Decodes one `all_types` record; `Ok` is the value of `column`.
fn decode_one(entity: &Arc<Entity>, extra: &str, column: &str) -> Result<Expected, Reject> {
    let mut decoder = PageDecoder::new(entity.clone(), "p-1");
    let decoded = decoder
        .decode(page(&[all_types_record(extra)]).as_slice())
        .unwrap();
    match decoded.rejects.into_iter().next() {
        Some(reject) => {
            assert_eq!(decoded.batch.num_rows(), 0);
            Err(reject)
        }
        None => Ok(actual(decoded.batch.column_by_name(column).unwrap(), 0)),
    }
}

#[test]
fn every_type_accepts_its_coercions() {
    let e = all_types();
    let ok = |extra: &str, column: &str| decode_one(&e, extra, column).unwrap();
    assert_eq!(
        ok(r#""s":"a\"b\u00e9""#, "s"),
        Expected::Str("a\"bé".into())
    );
    assert_eq!(ok(r#""i32":42"#, "i32"), Expected::Int32(42));
    assert_eq!(ok(r#""i32":"-7""#, "i32"), Expected::Int32(-7));
    assert_eq!(ok(r#""i32":30.0"#, "i32"), Expected::Int32(30));
    assert_eq!(
        ok(r#""i64":9007199254740993"#, "i64"),
        Expected::Int64(9_007_199_254_740_993)
    );
    assert_eq!(ok(r#""f64":"12.50""#, "f64"), Expected::Float64(12.5));
    assert_eq!(ok(r#""f64":1e-3"#, "f64"), Expected::Float64(0.001));
    assert_eq!(ok(r#""dec":"12.50""#, "dec"), Expected::Decimal(12_500));
    assert_eq!(ok(r#""dec":0.1"#, "dec"), Expected::Decimal(100));
    assert_eq!(
        ok(r#""dec":-999999.999"#, "dec"),
        Expected::Decimal(-999_999_999)
    );
    for (json, want) in [
        ("true", true),
        ("\"false\"", false),
        ("1", true),
        ("\"0\"", false),
    ] {
        assert_eq!(
            ok(&format!(r#""b":{json}"#), "b"),
            Expected::Bool(want),
            "{json}"
        );
    }
    assert_eq!(ok(r#""d":"2024-02-29""#, "d"), Expected::Date(19_782));
    assert_eq!(
        ok(r#""ts":"2026-11-27T12:30:00.25+02:30""#, "ts"),
        Expected::Timestamp(1_795_766_400_000_000 + 2 * 3_600_000_000 + 250_000)
    );
    assert_eq!(
        ok(r#""tags":["a",null,"b"]"#, "tags"),
        Expected::List(vec![Some("a".into()), None, Some("b".into())])
    );
    assert_eq!(ok(r#""tags":[]"#, "tags"), Expected::List(vec![]));
    assert_eq!(ok(r#""tags":null"#, "tags"), Expected::Null);
    assert_eq!(ok("", "owner_name"), Expected::Str("Ann".into()));
    assert_eq!(ok("", "deleted"), Expected::Bool(false));
    assert_eq!(ok(r#""deleted":null"#, "deleted"), Expected::Bool(false));
    assert_eq!(ok(r#""deleted":"true""#, "deleted"), Expected::Bool(true));
    assert_eq!(ok(r#""s":null"#, "s"), Expected::Null);
}

#[test]
fn values_that_cannot_be_coerced_are_rejected_with_field_and_reason() {
    let e = all_types();
    let cases = [
        (r#""s":12"#, "s", "expected a string"),
        (r#""s":{"a":1}"#, "s", "expected a string"),
        (r#""i32":2147483648"#, "i32", "out of range for int32"),
        (r#""i32":"2.5""#, "i32", "not a whole number"),
        (r#""i32":true"#, "i32", "expected a whole number"),
        (
            r#""i64":"9223372036854775808""#,
            "i64",
            "out of range for int64",
        ),
        (r#""f64":"abc""#, "f64", "not a number"),
        (r#""f64":[1]"#, "f64", "got a list"),
        (r#""dec":1234567.0"#, "dec", "out of range for decimal(9,3)"),
        (r#""dec":"0.0005""#, "dec", "more than 3 decimal places"),
        (r#""b":2"#, "b", "not a boolean"),
        (r#""b":"yes""#, "b", "not a boolean"),
        (r#""d":"2026-02-30""#, "d", "not a day of the calendar"),
        (r#""d":"27/11/2026""#, "d", "not a date"),
        (r#""d":20261127"#, "d", "expected a date"),
        (
            r#""ts":"2026-11-27T10:00:00""#,
            "ts",
            "not an RFC 3339 timestamp",
        ),
        (r#""ts":1700000000"#, "ts", "expected an RFC 3339"),
        (r#""tags":"a""#, "tags", "expected a list of strings"),
        (r#""tags":["a",1]"#, "tags", "expected a list of strings"),
        (r#""tags":[["a"]]"#, "tags", "expected a list of strings"),
        (r#""owner":"Ann""#, "owner", "expected an object"),
        (r#""i32":1,"i32":2"#, "i32", "appears twice"),
        (
            r#""lastModified":"never""#,
            "lastModified",
            "not an RFC 3339",
        ),
    ];
    for (extra, field, reason) in cases {
        let reject = decode_one(&e, extra, "s").expect_err(extra);
        assert_eq!(reject.field, field, "{extra}: {reject:?}");
        assert!(reject.reason.contains(reason), "{extra}: {reject:?}");
        assert_eq!(
            reject.raw,
            all_types_record(extra),
            "the raw text is kept as received"
        );
    }
}

#[test]
fn required_fields_missing_or_null_are_rejected() {
    let e = all_types();
    let mut decoder = PageDecoder::new(e.clone(), "p-1");
    let records = [
        r#"{"lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","owner":{"name":"A"}}"#,
        r#"{"id":null,"lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","owner":{"name":"A"}}"#,
        r#"{"id":"x","lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","owner":null}"#,
        r#"{"id":"x","lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","owner":{}}"#,
        r#"{"id":"x","lastModified":"2026-11-27T10:00:00Z","owner":{"name":"A"}}"#,
        r#"{"id":"x","practiceId":"p-1","owner":{"name":"A"}}"#,
    ];
    let decoded = decoder
        .decode(page(&records.map(str::to_owned)).as_slice())
        .unwrap();
    let got: Vec<(&str, &str)> = decoded
        .rejects
        .iter()
        .map(|r| (r.field.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("id", "required field is missing"),
            ("id", "required field is null"),
            ("owner.name", "required field is missing"),
            ("owner.name", "required field is missing"),
            ("practiceId", "required field is missing"),
            ("lastModified", "required field is missing"),
        ]
    );
    assert_eq!(decoded.batch.num_rows(), 0);
}

#[test]
fn records_of_another_source_are_rejected() {
    let (_, mut decoder) = decoder_for("sites", "p-1");
    let record = |practice: &str| {
        format!(
            r#"{{"id":"s","lastModified":"2026-11-27T10:00:00Z","practiceId":"{practice}","name":"Main"}}"#
        )
    };
    let decoded = decoder
        .decode(page(&[record("p-1"), record("p-2")]).as_slice())
        .unwrap();
    assert_eq!(decoded.batch.num_rows(), 1);
    assert_eq!(decoded.rejects.len(), 1);
    assert_eq!(decoded.rejects[0].field, "practiceId");
    assert!(
        decoded.rejects[0].reason.contains("\"p-2\""),
        "{:?}",
        decoded.rejects[0]
    );

    // A supplier entity checks `supplierId` and keeps `practiceId` as data.
    let (_, mut decoder) = decoder_for("supplier_invoices", "sup-1");
    let record = |supplier: &str| {
        format!(
            r#"{{"id":"i","lastModified":"2026-11-27T10:00:00Z","supplierId":"{supplier}","practiceId":"p-9","invoiceNumber":"N1","invoiceDate":"2026-11-27","total":"10.00"}}"#
        )
    };
    let decoded = decoder
        .decode(page(&[record("sup-1"), record("sup-2")]).as_slice())
        .unwrap();
    assert_eq!(decoded.batch.num_rows(), 1);
    assert_eq!(decoded.rejects[0].field, "supplierId");
    let practice = decoded.batch.column_by_name("practice_id").unwrap();
    assert_eq!(actual(practice, 0), Expected::Str("p-9".into()));
}

#[test]
fn unknown_keys_are_counted_per_dotted_key() {
    let (entity, mut decoder) = decoder_for("patients", "p-1");
    let mut generated = generate_records(&entity, "p-1", 4, 7);
    let add = |record: &mut String, members: &str| {
        record.insert_str(record.len() - 1, members);
    };
    add(
        &mut generated.records[0],
        r#","favouriteToy":"ball","primaryVet2":{"x":1}"#,
    );
    add(&mut generated.records[1], r#","favouriteToy":null"#);
    let r2 = &mut generated.records[2];
    *r2 = r2.replacen(r#""primaryVet": {"#, r#""primaryVet": {"phone":"1","#, 1);
    if !r2.contains(r#""phone""#) {
        add(r2, r#","primaryVet":{"phone":"1"}"#);
    }
    // A rejected record's keys are not counted: it is kept whole in quarantine.
    add(
        &mut generated.records[3],
        r#","favouriteToy":"x","weight":"heavy""#,
    );
    let decoded = decoder.decode(&page(&generated.records)).unwrap();
    assert_eq!(decoded.batch.num_rows(), 3, "{:?}", decoded.rejects);
    let want: BTreeMap<String, u64> = [
        ("favouriteToy".to_owned(), 2),
        ("primaryVet.phone".to_owned(), 1),
        ("primaryVet2".to_owned(), 1),
    ]
    .into();
    assert_eq!(decoded.unknown_keys, want);
}

#[test]
fn a_page_with_dirty_records_keeps_every_clean_one() {
    let (entity, mut decoder) = decoder_for("invoice_lines", "p-7");
    let generated = generate_records(&entity, "p-7", 500, 99);
    let mut rng = Rng(4242);
    let mut records = Vec::new();
    let mut clean = Vec::new();
    for (i, record) in generated.records.iter().enumerate() {
        let dirty = match rng.below(10) {
            0 => Some(record.replacen(r#""invoiceId""#, r#""invoiceIdd""#, 1)),
            1 => Some(record.replacen(r#""practiceId": "p-7""#, r#""practiceId": "p-8""#, 1)),
            2 => Some(format!(
                r#"{},"serviceDate":"2026-02-30"}}"#,
                &record[..record.len() - 1]
            )),
            3 => Some(format!(
                r#"{},"quantity":"many"}}"#,
                &record[..record.len() - 1]
            )),
            4 => Some("\"not a record\"".to_owned()),
            _ => None,
        };
        match dirty {
            Some(d) => records.push(d),
            None => {
                records.push(record.clone());
                clean.push(i);
            }
        }
    }
    let decoded = decoder.decode(&page(&records)).unwrap();
    assert_eq!(
        decoded.batch.num_rows() + decoded.rejects.len(),
        records.len()
    );
    let expected: Vec<_> = clean.iter().map(|&i| &generated.expected[i]).collect();
    assert_rows_match(&entity, &decoded, &expected);
    let dirty: Vec<&String> = (0..records.len())
        .filter(|i| !clean.contains(i))
        .map(|i| &records[i])
        .collect();
    let raws: Vec<&String> = decoded.rejects.iter().map(|r| &r.raw).collect();
    assert_eq!(
        raws, dirty,
        "every dirty record is rejected, as received, in order"
    );
    let not_object = decoded
        .rejects
        .iter()
        .find(|r| r.raw.starts_with('"'))
        .unwrap();
    assert_eq!(not_object.field, "");
}

#[test]
fn unusable_pages_are_errors() {
    let (_, mut decoder) = decoder_for("sites", "p-1");
    let not_array = decoder.decode(br#"{"items":[]}"#).unwrap_err();
    assert!(
        matches!(not_array, DecodeError::NotAnArray { found: "an object" }),
        "{not_array}"
    );
    assert!(matches!(
        decoder.decode(b"  "),
        Err(DecodeError::NotAnArray { found: "nothing" })
    ));
    let bad_utf8 = decoder.decode(b"[{\"id\":\"\xff\"}]").unwrap_err();
    assert!(
        matches!(bad_utf8, DecodeError::NotUtf8 { valid_up_to: 8 }),
        "{bad_utf8}"
    );
    let sites = |records: &str| {
        format!(
            r#"[{{"id":"s","lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","name":"A"}},{records}]"#
        )
    };
    for truncated in [
        b"[{\"id\":\"a\"}".to_vec(),
        b"[{\"id\":\"a\"},".to_vec(),
        b"[1,]".to_vec(),
        b"[] x".to_vec(),
        sites(r#"{"id":"a"} {"id":"b"}"#).into_bytes(),
        sites(r#"{"id":"a",}"#).into_bytes(),
        sites(r#"{"id":tru}"#).into_bytes(),
        sites(r#"{"id":"a"]"#).into_bytes(),
    ] {
        let err = decoder.decode(&truncated).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{err}");
    }
    // The decoder is still usable (no rows left over from a failed page),
    // and an empty page has the schema.
    let one_site = sites("").replace(",]", "]");
    assert_eq!(
        decoder
            .decode(one_site.as_bytes())
            .unwrap()
            .batch
            .num_rows(),
        1
    );
    let empty = decoder.decode(b" [ ] ").unwrap();
    assert_eq!(empty.batch.num_rows(), 0);
    assert_eq!(empty.batch.schema(), decoder.entity().arrow_schema());
}

#[test]
fn deeply_nested_unknown_values_are_skipped_without_recursion() {
    let (_, mut decoder) = decoder_for("sites", "p-1");
    let depth = 100_000;
    let record = format!(
        r#"{{"id":"s","lastModified":"2026-11-27T10:00:00Z","practiceId":"p-1","name":"Main","junk":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let decoded = decoder.decode(page(&[record]).as_slice()).unwrap();
    assert_eq!(decoded.batch.num_rows(), 1);
    assert_eq!(decoded.unknown_keys.get("junk"), Some(&1));
}
