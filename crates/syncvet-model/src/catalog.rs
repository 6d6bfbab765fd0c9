//! Loading the entity catalog: embedded files first, then a user folder.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Field as ArrowField, Schema, SchemaRef};
use serde::Deserialize;

use crate::{CatalogError, FieldType, Sample};

macro_rules! embedded {
    ($($source:literal / $entity:literal),* $(,)?) => {
        &[$((concat!($source, "/", $entity, ".toml"),
             include_str!(concat!("../catalog/", $source, "/", $entity, ".toml")))),*]
    };
}

/// The catalog files compiled into the binary, by relative path.
const EMBEDDED: &[(&str, &str)] = embedded![
    "pims" / "sites",
    "pims" / "clients",
    "pims" / "patients",
    "pims" / "providers",
    "pims" / "appointments",
    "pims" / "products",
    "pims" / "invoices",
    "pims" / "invoice_lines",
    "pims" / "payments",
    "pims" / "reminders",
    "pims" / "vaccinations",
    "pims" / "prescriptions",
    "pims" / "medical_notes",
    "supplier" / "supplier_products",
    "supplier" / "supplier_invoices",
    "supplier" / "supplier_invoice_lines",
];

/// Which kind of data source serves an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    /// A practice information management system; partitions by `practice_id`.
    Pims,
    /// A supplier feed; partitions by `supplier_id`.
    Supplier,
}

impl SourceType {
    /// The lake folder of this source type (`pims`, `supplier`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceType::Pims => "pims",
            SourceType::Supplier => "supplier",
        }
    }

    /// The record key naming the source (`practiceId`, `supplierId`).
    pub fn source_key(self) -> &'static str {
        match self {
            SourceType::Pims => "practiceId",
            SourceType::Supplier => "supplierId",
        }
    }

    /// The partition column in the lake path (`practice_id`, `supplier_id`).
    pub fn partition_column(self) -> &'static str {
        match self {
            SourceType::Pims => "practice_id",
            SourceType::Supplier => "supplier_id",
        }
    }

    /// Parses the API's `dataSourceType` (`PIMS`, `Supplier`), case-insensitively.
    pub fn from_api(value: &str) -> Option<SourceType> {
        match value.to_ascii_lowercase().as_str() {
            "pims" => Some(SourceType::Pims),
            "supplier" => Some(SourceType::Supplier),
            _ => None,
        }
    }
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a field is for, beyond carrying data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRole {
    /// An ordinary column.
    Data,
    /// `practiceId` / `supplierId`: must name the source being read; not
    /// written to the files (the partition path carries it).
    SourceKey,
    /// `deleted`: false when absent, never null.
    DeletedFlag,
}

/// One field of an entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The JSON key, dotted for a nested object (`primaryVet.id`).
    pub key: String,
    /// The output column (`primary_vet_id`).
    pub column: String,
    /// The stored type.
    pub field_type: FieldType,
    /// A record without this field (or with null) is rejected.
    pub required: bool,
    /// The values a string field takes, where the data model lists them
    /// (used by the emulator; the decoder keeps any value).
    pub values: Vec<String>,
    /// How the emulator makes realistic values of it (the decoder ignores it).
    pub sample: Sample,
    /// What the field is for.
    pub role: FieldRole,
}

impl Field {
    fn common(key: &str, field_type: FieldType, required: bool, role: FieldRole) -> Field {
        Field {
            key: key.to_owned(),
            column: snake_case(key),
            field_type,
            required,
            values: Vec::new(),
            sample: Sample::default(),
            role,
        }
    }

    /// Whether the column may hold nulls.
    pub fn nullable(&self) -> bool {
        !self.required && self.role != FieldRole::DeletedFlag
    }
}

/// A top-level member of an entity's records: a field, or a nested object
/// of fields (`primaryVet`, holding `primaryVet.id` and `primaryVet.name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Member {
    /// The field of that index in [`Entity::fields`].
    Field(usize),
    /// A nested object: its key, and each of its fields' leaf key and index
    /// in [`Entity::fields`], in catalog order.
    Object {
        /// The object's key (`primaryVet`).
        key: String,
        /// (`id`, index of `primaryVet.id`), …
        fields: Vec<(String, usize)>,
    },
}

/// One entity of the catalog: its fields and the schema derived from them.
#[derive(Debug, Clone)]
pub struct Entity {
    /// The entity name as the API and the lake use it (`patients`).
    pub name: String,
    /// The source type that serves it.
    pub source: SourceType,
    /// Every field, the common ones (`id`, `lastModified`, `deleted`, the
    /// source key) first.
    pub fields: Vec<Field>,
    /// Where the definition came from (`embedded:pims/patients.toml` or a path).
    pub origin: String,
    /// What the emulator's record ids of it start with (`pat`; catalog
    /// `id_prefix`, else the name's first three letters).
    pub id_prefix: String,
    /// How many records a day the emulator serves of it, relative to the
    /// other entities of its source type (catalog `daily_weight`, else 1).
    pub daily_weight: f64,
    members: Vec<Member>,
    schema: SchemaRef,
    fingerprint: String,
}

impl Entity {
    /// The Arrow schema of the entity's Parquet files: every field but the
    /// source key, in catalog order.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The shape of a record: its top-level members in catalog order, each
    /// nested object once, at its first field's place. The one grouping of
    /// dotted keys that the decoder and the emulator both follow.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The fields stored as columns, in schema order.
    pub fn columns(&self) -> impl Iterator<Item = &Field> {
        self.fields
            .iter()
            .filter(|f| f.role != FieldRole::SourceKey)
    }

    /// A short, stable hash of the schema (column names, the catalog's type
    /// names, nullability).
    pub fn schema_fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// The entity catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    entities: BTreeMap<String, Arc<Entity>>,
}

impl Catalog {
    /// The catalog compiled into the binary (all 16 entities of `schemas.md`).
    pub fn embedded() -> Catalog {
        Catalog::from_files(
            EMBEDDED
                .iter()
                .map(|(path, text)| (format!("embedded:{path}"), *text)),
        )
        .expect("the embedded catalog is valid (checked by its tests)")
    }

    /// The embedded catalog, overridden and extended by every `*.toml` file
    /// found in `dir` and its subfolders.
    pub fn load(dir: Option<&Path>) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog::embedded();
        let Some(dir) = dir else { return Ok(catalog) };
        let mut paths = Vec::new();
        collect_toml(dir, &mut paths)?;
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
                path: path.clone(),
                source,
            })?;
            let entity = parse_entity(&path.display().to_string(), &text)?;
            catalog
                .entities
                .insert(entity.name.clone(), Arc::new(entity));
        }
        catalog.check_references()?;
        Ok(catalog)
    }

    fn from_files<'a>(
        files: impl Iterator<Item = (String, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut entities = BTreeMap::new();
        for (origin, text) in files {
            let entity = parse_entity(&origin, text)?;
            entities.insert(entity.name.clone(), Arc::new(entity));
        }
        let catalog = Catalog { entities };
        catalog.check_references()?;
        Ok(catalog)
    }

    /// Every `references` names an entity of the catalog.
    fn check_references(&self) -> Result<(), CatalogError> {
        for entity in self.entities.values() {
            for field in &entity.fields {
                if let Some(target) = &field.sample.references
                    && !self.entities.contains_key(target)
                {
                    return Err(CatalogError::Field {
                        file: entity.origin.clone(),
                        field: field.key.clone(),
                        problem: format!("references `{target}`, which the catalog does not have"),
                    });
                }
            }
        }
        Ok(())
    }

    /// The entity of that name.
    pub fn entity(&self, name: &str) -> Option<&Arc<Entity>> {
        self.entities.get(name)
    }

    /// Every entity, by name.
    pub fn entities(&self) -> impl Iterator<Item = &Arc<Entity>> {
        self.entities.values()
    }

    /// The entities a source of that type serves, by name.
    pub fn for_source(&self, source: SourceType) -> impl Iterator<Item = &Arc<Entity>> {
        self.entities.values().filter(move |e| e.source == source)
    }
}

fn collect_toml(dir: &Path, out: &mut Vec<std::path::PathBuf>) -> Result<(), CatalogError> {
    let read_err = |source| CatalogError::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let path = entry.map_err(read_err)?.path();
        if path.is_dir() {
            collect_toml(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntityFile {
    entity: String,
    source: SourceType,
    #[serde(default)]
    id_prefix: Option<String>,
    #[serde(default)]
    daily_weight: Option<f64>,
    #[serde(default)]
    fields: Vec<FieldFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldFile {
    key: String,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    values: Vec<String>,
    column: Option<String>,
    sample: Option<String>,
    references: Option<String>,
    range: Option<[i64; 2]>,
}

const COMMON_KEYS: [&str; 5] = ["id", "lastModified", "deleted", "practiceId", "supplierId"];

fn parse_entity(file: &str, text: &str) -> Result<Entity, CatalogError> {
    let parsed: EntityFile = toml::from_str(text).map_err(|e| CatalogError::Parse {
        file: file.to_owned(),
        message: e.to_string().trim_end().replace('\n', " "),
    })?;
    let entity_err = |problem: String| CatalogError::Entity {
        file: file.to_owned(),
        problem,
    };
    if !is_identifier(&parsed.entity) {
        return Err(entity_err(format!(
            "entity name `{}` must be lowercase letters, digits and underscores",
            parsed.entity
        )));
    }
    let id_prefix = parsed
        .id_prefix
        .unwrap_or_else(|| parsed.entity.chars().take(3).collect());
    if id_prefix.is_empty()
        || id_prefix.len() > 8
        || !id_prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(entity_err(format!(
            "id_prefix `{id_prefix}` must be 1 to 8 lowercase letters or digits"
        )));
    }
    let daily_weight = parsed.daily_weight.unwrap_or(1.0);
    if !(daily_weight.is_finite() && daily_weight > 0.0) {
        return Err(entity_err(format!(
            "daily_weight {daily_weight} must be a positive number"
        )));
    }
    let source = parsed.source;
    let mut fields = vec![
        Field::common("id", FieldType::String, true, FieldRole::Data),
        Field::common("lastModified", FieldType::Timestamp, true, FieldRole::Data),
        Field::common("deleted", FieldType::Bool, false, FieldRole::DeletedFlag),
        Field::common(
            source.source_key(),
            FieldType::String,
            true,
            FieldRole::SourceKey,
        ),
    ];
    for f in parsed.fields {
        fields.push(parse_field(file, source, f)?);
    }
    let mut seen = HashSet::new();
    for f in &fields {
        if !seen.insert(f.column.as_str()) {
            return Err(CatalogError::Field {
                file: file.to_owned(),
                field: f.key.clone(),
                problem: format!("column `{}` is defined twice", f.column),
            });
        }
    }
    let members = members_of(&fields);
    let objects: HashSet<&str> = members
        .iter()
        .filter_map(|m| match m {
            Member::Object { key, .. } => Some(key.as_str()),
            Member::Field(_) => None,
        })
        .collect();
    if let Some(f) = fields.iter().find(|f| objects.contains(f.key.as_str())) {
        return Err(CatalogError::Field {
            file: file.to_owned(),
            field: f.key.clone(),
            problem: "is both a value and a nested object".into(),
        });
    }
    let schema: SchemaRef = Arc::new(Schema::new(
        fields
            .iter()
            .filter(|f| f.role != FieldRole::SourceKey)
            .map(|f| ArrowField::new(&f.column, f.field_type.arrow_type(), f.nullable()))
            .collect::<Vec<_>>(),
    ));
    let fingerprint = fingerprint(&fields);
    Ok(Entity {
        name: parsed.entity,
        source,
        fields,
        origin: file.to_owned(),
        id_prefix,
        daily_weight,
        members,
        schema,
        fingerprint,
    })
}

/// One field of a catalog file, checked: not a common field, a key of at
/// most one dot, a known type, a valid column name.
fn parse_field(file: &str, source: SourceType, f: FieldFile) -> Result<Field, CatalogError> {
    let field_err = |problem: String| CatalogError::Field {
        file: file.to_owned(),
        field: f.key.clone(),
        problem,
    };
    // supplier invoices carry the customer's `practiceId` as data.
    if COMMON_KEYS.contains(&f.key.as_str()) && f.key != "practiceId"
        || f.key == source.source_key()
    {
        return Err(field_err(
            "is a common field that every entity has already".into(),
        ));
    }
    let segments: Vec<&str> = f.key.split('.').collect();
    if segments.len() > 2
        || segments
            .iter()
            .any(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(field_err(
            "a key is letters, digits and underscores, with at most one dot for a nested object"
                .into(),
        ));
    }
    let field_type: FieldType = f.field_type.parse().map_err(&field_err)?;
    let sample = Sample::parse(field_type, f.sample, f.references, f.range).map_err(&field_err)?;
    let column = f.column.clone().unwrap_or_else(|| snake_case(&f.key));
    if !is_identifier(&column) {
        return Err(field_err(format!(
            "column `{column}` must be lowercase letters, digits and underscores"
        )));
    }
    Ok(Field {
        key: f.key,
        column,
        field_type,
        required: f.required,
        values: f.values,
        sample,
        role: FieldRole::Data,
    })
}

/// Groups dotted keys into their nested objects, in catalog order.
fn members_of(fields: &[Field]) -> Vec<Member> {
    let mut members: Vec<Member> = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        let Some((parent, leaf)) = field.key.split_once('.') else {
            members.push(Member::Field(i));
            continue;
        };
        let object = members.iter_mut().find_map(|m| match m {
            Member::Object { key, fields } if key == parent => Some(fields),
            _ => None,
        });
        match object {
            Some(fields) => fields.push((leaf.to_owned(), i)),
            None => members.push(Member::Object {
                key: parent.to_owned(),
                fields: vec![(leaf.to_owned(), i)],
            }),
        }
    }
    members
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `dateOfBirth` → `date_of_birth`, `primaryVet.id` → `primary_vet_id`.
pub(crate) fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    for c in key.chars() {
        if c == '.' {
            out.push('_');
        } else if c.is_ascii_uppercase() {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// FNV-1a over the schema's columns: stable across builds and platforms.
/// A hash of the stored columns (name, catalog type name, nullability):
/// the catalog's own names, so that it moves only when the catalog does
/// (arrow's `DataType` display changed between arrow versions).
fn fingerprint(fields: &[Field]) -> String {
    let text: String = fields
        .iter()
        .filter(|f| f.role != FieldRole::SourceKey)
        .map(|f| format!("{}:{}:{};", f.column, f.field_type, f.nullable()))
        .collect();
    format!("{:016x}", fnv1a(text.as_bytes()))
}

/// FNV-1a, 64 bits: a stable hash of bytes (the same on every platform,
/// build and version), for the schema fingerprint and the emulator's
/// deterministic data. Written here because it is four lines.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, TimeUnit};

    #[test]
    fn embedded_catalog_has_all_sixteen_entities() {
        let catalog = Catalog::embedded();
        assert_eq!(catalog.for_source(SourceType::Pims).count(), 13);
        assert_eq!(catalog.for_source(SourceType::Supplier).count(), 3);
        for e in catalog.entities() {
            assert_eq!(e.fields[0].key, "id", "{}", e.name);
        }
    }

    #[test]
    fn patients_schema_is_snake_case_flattened_and_typed() {
        let catalog = Catalog::embedded();
        let schema = catalog.entity("patients").unwrap().arrow_schema();
        let field = |name: &str| schema.field_with_name(name).unwrap().clone();
        assert_eq!(field("date_of_birth").data_type(), &DataType::Date32);
        assert_eq!(field("primary_vet_id").data_type(), &DataType::Utf8);
        assert_eq!(field("weight").data_type(), &DataType::Decimal128(9, 3));
        assert_eq!(
            field("last_modified").data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(!field("client_id").is_nullable());
        assert!(!field("deleted").is_nullable());
        assert!(field("breed").is_nullable());
        assert!(
            schema.field_with_name("practice_id").is_err(),
            "partition column stays in the path"
        );
        assert_eq!(schema.fields().len(), 23 + 3);
    }

    #[test]
    fn supplier_invoices_keep_the_customer_practice_id_as_data() {
        let catalog = Catalog::embedded();
        let schema = catalog.entity("supplier_invoices").unwrap().arrow_schema();
        assert!(schema.field_with_name("practice_id").is_ok());
        assert!(schema.field_with_name("supplier_id").is_err());
    }

    #[test]
    fn snake_case_follows_the_catalog_convention() {
        assert_eq!(snake_case("dateOfBirth"), "date_of_birth");
        assert_eq!(snake_case("primaryVet.id"), "primary_vet_id");
        assert_eq!(snake_case("addressLine1"), "address_line1");
        assert_eq!(snake_case("id"), "id");
    }

    #[test]
    fn malformed_files_name_the_file_the_field_and_the_problem() {
        let bad_type = "entity = \"x\"\nsource = \"pims\"\n[[fields]]\nkey = \"weight\"\ntype = \"decimel(9,3)\"\n";
        let err = parse_entity("my/x.toml", bad_type).unwrap_err().to_string();
        assert!(
            err.contains("my/x.toml") && err.contains("weight") && err.contains("decimel"),
            "{err}"
        );

        let unknown = "entity = \"x\"\nsource = \"pims\"\n[[fields]]\nkey = \"a\"\ntype = \"string\"\nrequird = true\n";
        let err = parse_entity("x.toml", unknown).unwrap_err().to_string();
        assert!(err.contains("x.toml") && err.contains("requird"), "{err}");

        let bad_source = "entity = \"x\"\nsource = \"lab\"\n";
        assert!(
            parse_entity("x.toml", bad_source)
                .unwrap_err()
                .to_string()
                .contains("lab")
        );

        let dup = "entity = \"x\"\nsource = \"pims\"\n[[fields]]\nkey = \"fooBar\"\ntype = \"string\"\n[[fields]]\nkey = \"foo.bar\"\ntype = \"string\"\n";
        assert!(
            parse_entity("x.toml", dup)
                .unwrap_err()
                .to_string()
                .contains("defined twice")
        );

        let path_name = "entity = \"../x\"\nsource = \"pims\"\n";
        assert!(parse_entity("x.toml", path_name).is_err());
    }

    #[test]
    fn generation_hints_are_checked_and_name_the_field() {
        let entity = |fields: &str| format!("entity = \"labs\"\nsource = \"pims\"\n{fields}");
        let error = |fields: &str| {
            parse_entity("labs.toml", &entity(fields))
                .unwrap_err()
                .to_string()
        };
        let err = error("[[fields]]\nkey = \"kind\"\ntype = \"string\"\nsample = \"wizard\"\n");
        assert!(
            err.contains("`kind`") && err.contains("sample `wizard`"),
            "{err}"
        );
        let err = error("[[fields]]\nkey = \"kind\"\ntype = \"string\"\nrange = [1, 2]\n");
        assert!(err.contains("`range` is for"), "{err}");
        let err = error("[[fields]]\nkey = \"dose\"\ntype = \"int32\"\nrange = [9, 2]\n");
        assert!(err.contains("is empty"), "{err}");
        // The prefix defaults to the name's first three letters.
        let labs = parse_entity("labs.toml", &entity("")).unwrap();
        assert_eq!((labs.id_prefix.as_str(), labs.daily_weight), ("lab", 1.0));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("labs.toml"),
            entity("[[fields]]\nkey = \"orderId\"\ntype = \"string\"\nreferences = \"orders\"\n"),
        )
        .unwrap();
        let err = Catalog::load(Some(dir.path())).unwrap_err().to_string();
        assert!(
            err.contains("`orderId`") && err.contains("references `orders`"),
            "{err}"
        );
    }

    #[test]
    fn a_user_folder_overrides_and_extends() {
        let dir = std::env::temp_dir().join(format!("syncvet-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("labs.toml"), "entity = \"lab_results\"\nsource = \"pims\"\n[[fields]]\nkey = \"value\"\ntype = \"float64\"\n").unwrap();
        std::fs::write(dir.join("sites.toml"), "entity = \"sites\"\nsource = \"pims\"\n[[fields]]\nkey = \"name\"\ntype = \"string\"\n").unwrap();
        let catalog = Catalog::load(Some(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(catalog.entities().count(), 17);
        assert_eq!(catalog.entity("sites").unwrap().columns().count(), 4);
        assert_ne!(
            catalog.entity("sites").unwrap().schema_fingerprint(),
            Catalog::embedded()
                .entity("sites")
                .unwrap()
                .schema_fingerprint()
        );
    }
}
