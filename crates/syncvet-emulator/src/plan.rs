//! How each catalog field is generated: decided once per entity from the
//! field's role, type, listed values and catalog hints (`sample`,
//! `references`, `range`; never its name), so rendering a record is a
//! tight loop over precomputed slots.

use std::sync::OnceLock;

use syncvet_model::{Catalog, Entity, Field, FieldRole, FieldType, SourceType};

/// What kind of value a string field gets.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    /// The record's own id (`pat-20261127-000042`).
    RecordId,
    /// A reference to another record (`cli-20260311-000017`): the
    /// referenced entity's id prefix.
    Reference(Box<str>),
    /// `practiceId` of a supplier record: a PIMS source id.
    CustomerPractice,
    /// One of the catalog's listed values.
    Listed(Vec<String>),
    /// One of a built-in word list.
    Word(&'static [&'static str]),
    /// Several words of prose (`min..=max` words).
    Prose(u32, u32),
    /// A first and last name.
    PersonName,
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// A street address.
    Street,
    /// A postal code.
    PostalCode,
    /// A code: a prefix then digits (`INV-`, 6 digits).
    Code(&'static str, u32),
}

/// The generator of one field.
#[derive(Debug, Clone)]
pub(crate) enum Gen {
    /// A string.
    Text(Text),
    /// The source id (`practiceId`/`supplierId` of the record's source).
    SourceKey,
    /// `deleted`: true on a deletion, else false or sometimes absent.
    Deleted,
    /// `lastModified`: an instant within the batch date.
    LastModified,
    /// An integer in `lo..=hi`.
    Int(i64, i64),
    /// A float in `0..max`.
    Float(f64),
    /// A decimal with `scale` digits, `0..max_units` units of 10^-scale.
    Decimal { scale: u32, max_units: u64 },
    /// A bool.
    Bool,
    /// A date `lo..=hi` days from the batch date.
    Date(i64, i64),
    /// An instant `lo..=hi` days from the batch date.
    Timestamp(i64, i64),
    /// A list of words.
    List(&'static [&'static str]),
}

/// One field, ready to render.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// `"clientId":` (the leaf name for a nested field).
    pub key: Vec<u8>,
    pub field_type: FieldType,
    pub required: bool,
    pub generator: Gen,
}

/// A top-level member of a record: a field, or a nested object of fields.
#[derive(Debug, Clone)]
pub(crate) enum SlotMember {
    Field(Slot),
    /// `"primaryVet":` and the nested fields.
    Object(Vec<u8>, Vec<Slot>),
}

/// How to render the records of one entity.
#[derive(Debug, Clone)]
pub(crate) struct EntityPlan {
    pub name: String,
    pub source_type: SourceType,
    /// The record id prefix (`pat`).
    pub id_prefix: String,
    pub members: Vec<SlotMember>,
    /// Rough bytes per record, to size page buffers.
    pub bytes_hint: usize,
    /// Slot numbers (render order) a dirty record may break: any but the
    /// source key (wrong type), dates and timestamps (impossible date),
    /// required ones but the source key (missing).
    pub dirty_targets: [Vec<usize>; 3],
}

pub(crate) const FIRST_NAMES: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Mia", "Lucas", "Amelia",
    "Mason", "Harper", "Ethan", "Evelyn", "Logan", "Abigail", "Jacob", "Ella", "Henry",
];
pub(crate) const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "O'Neil",
];
const PET_NAMES: &[&str] = &[
    "Bella", "Max", "Luna", "Charlie", "Lucy", "Cooper", "Daisy", "Milo", "Bailey", "Rocky",
    "Sadie", "Buddy", "Molly", "Bear", "Stella", "Tucker", "Zoe", "Duke", "Penny", "Oliver",
];
const SPECIES: &[&str] = &["Canine", "Feline", "Equine", "Avian", "Rabbit", "Reptile"];
const BREEDS: &[&str] = &[
    "Labrador Retriever",
    "German Shepherd",
    "Golden Retriever",
    "Beagle",
    "Domestic Shorthair",
    "Maine Coon",
    "Siamese",
    "Poodle",
    "Bulldog",
    "Mixed",
];
const COLORS: &[&str] = &[
    "Black", "White", "Brown", "Tan", "Brindle", "Grey", "Calico", "Tabby",
];
const SEXES: &[&str] = &[
    "Male",
    "Female",
    "Male Neutered",
    "Female Spayed",
    "Unknown",
];
pub(crate) const WORDS: &[&str] = &[
    "patient",
    "presented",
    "with",
    "mild",
    "lethargy",
    "and",
    "reduced",
    "appetite",
    "for",
    "two",
    "days",
    "owner",
    "reports",
    "no",
    "vomiting",
    "heart",
    "rate",
    "normal",
    "abdomen",
    "soft",
    "recheck",
    "in",
    "one",
    "week",
    "continue",
    "medication",
    "as",
    "directed",
    "bloodwork",
    "within",
    "limits",
    "vaccines",
    "updated",
    "dental",
    "tartar",
    "grade",
    "weight",
    "stable",
];
const CITIES: &[&str] = &[
    "Springfield",
    "Franklin",
    "Greenville",
    "Madison",
    "Clinton",
    "Georgetown",
    "Salem",
    "Fairview",
    "Austin",
    "Denver",
    "Portland",
    "Columbus",
];
const STATES: &[&str] = &[
    "TX", "CA", "NY", "IL", "OH", "CO", "OR", "WA", "FL", "GA", "MN",
];
pub(crate) const STREETS: &[&str] = &[
    "Main", "Oak", "Pine", "Maple", "Cedar", "Elm", "Lake", "Hill",
];
const TITLES: &[&str] = &["Mr", "Mrs", "Ms", "Dr", "Mx"];
const CONTACT: &[&str] = &["Email", "Phone", "SMS", "Mail"];
const REFERRAL: &[&str] = &["Website", "Friend", "Walk-in", "Shelter", "Social media"];
const STATUS: &[&str] = &["Active", "Pending", "Completed", "Cancelled"];
const APPOINTMENT_TYPES: &[&str] = &["Wellness", "Sick visit", "Surgery", "Dental", "Recheck"];
const CATEGORIES: &[&str] = &["Pharmacy", "Vaccines", "Diet", "Surgery", "Lab", "Supplies"];
const UNITS: &[&str] = &["each", "tablet", "ml", "box", "bag", "vial"];
const PRODUCTS: &[&str] = &[
    "Rabies Vaccine 1yr",
    "DHPP Vaccine",
    "Carprofen 75mg",
    "Heartworm Test",
    "Exam Fee",
    "Cephalexin 500mg",
    "Dental Cleaning",
    "Apoquel 16mg",
    "Prescription Diet 8lb",
    "Bravecto",
];
const MANUFACTURERS: &[&str] = &[
    "Zoetis",
    "Merck",
    "Elanco",
    "Boehringer",
    "Virbac",
    "Hill's",
];
const ROUTES: &[&str] = &["SC", "IM", "IN", "PO"];
const STRENGTHS: &[&str] = &["25 mg", "75 mg", "100 mg", "250 mg", "5 mg/ml"];
const WEIGHT_UNITS: &[&str] = &["kg", "lb"];
const CURRENCIES: &[&str] = &["USD", "USD", "USD", "CAD"];
const ZONES: &[&str] = &["America/Chicago", "America/New_York", "America/Denver"];
const ROOMS: &[&str] = &["Exam 1", "Exam 2", "Exam 3", "Surgery", "Dental"];
const ALERTS: &[&str] = &[
    "Aggressive",
    "Diabetic",
    "Allergic to penicillin",
    "Heart murmur",
    "Senior",
];
const SITE_NAMES: &[&str] = &["Main Street Clinic", "North Campus", "Downtown", "Westside"];

/// The embedded catalog, parsed once: what the emulator serves.
pub(crate) fn embedded_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(Catalog::embedded)
}

/// The words of a `sample` kind of text, for the kinds that are a list.
fn word_list(sample: &str) -> Option<&'static [&'static str]> {
    Some(match sample {
        "first_name" => FIRST_NAMES,
        "last_name" => LAST_NAMES,
        "pet_name" => PET_NAMES,
        "site_name" => SITE_NAMES,
        "product_name" => PRODUCTS,
        "species" => SPECIES,
        "breed" => BREEDS,
        "color" => COLORS,
        "sex" => SEXES,
        "title" => TITLES,
        "city" => CITIES,
        "state" => STATES,
        "country" => &["US"],
        "time_zone" => ZONES,
        "contact_method" => CONTACT,
        "referral_source" => REFERRAL,
        "status" => STATUS,
        "appointment_type" => APPOINTMENT_TYPES,
        "room" => ROOMS,
        "category" => CATEGORIES,
        "unit" => UNITS,
        "manufacturer" => MANUFACTURERS,
        "route" => ROUTES,
        "strength" => STRENGTHS,
        "weight_unit" => WEIGHT_UNITS,
        "currency" => CURRENCIES,
        "alert" => ALERTS,
        _ => return None,
    })
}

/// A string field's generator, from its catalog hints alone: listed
/// values, a reference, a `sample` kind, or a code.
fn text_of(field: &Field, catalog: &Catalog) -> Text {
    let sample = &field.sample;
    if field.key == "id" {
        return Text::RecordId;
    }
    if let Some(target) = &sample.references {
        let prefix = catalog
            .entity(target)
            .map_or("rec", |entity| entity.id_prefix.as_str());
        return Text::Reference(prefix.into());
    }
    let Some(kind) = sample.text.as_deref() else {
        return match field.values.is_empty() {
            true => Text::Code("X", 6),
            false => Text::Listed(field.values.clone()),
        };
    };
    if let Some(words) = word_list(kind) {
        return Text::Word(words);
    }
    match kind {
        "practice_id" => Text::CustomerPractice,
        "person_name" => Text::PersonName,
        "email" => Text::Email,
        "phone" => Text::Phone,
        "street" => Text::Street,
        "suite" => Text::Code("Suite ", 3),
        "postal_code" => Text::PostalCode,
        "microchip" => Text::Code("9851", 11),
        "invoice_number" => Text::Code("INV-", 7),
        "sku" => Text::Code("SKU-", 6),
        "gtin" => Text::Code("0", 13),
        "product_code" => Text::Code("P", 5),
        "notes" => Text::Prose(8, 30),
        "text" => Text::Prose(3, 9),
        // The catalog accepts only the kinds of `TEXT_SAMPLES`, each mapped here.
        other => unreachable!("sample kind `{other}` has no generator"),
    }
}

/// A field's generator: its role, then its type and catalog hints.
fn gen_of(field: &Field, catalog: &Catalog) -> Gen {
    match field.role {
        FieldRole::SourceKey => return Gen::SourceKey,
        FieldRole::DeletedFlag => return Gen::Deleted,
        FieldRole::Data => {}
    }
    if field.key == "lastModified" {
        return Gen::LastModified;
    }
    let range = field.sample.range;
    match field.field_type {
        FieldType::String => Gen::Text(text_of(field, catalog)),
        FieldType::Int32 | FieldType::Int64 => {
            let (lo, hi) = range.unwrap_or((0, 12));
            Gen::Int(lo, hi)
        }
        FieldType::Float64 => Gen::Float(1000.0),
        FieldType::Decimal { precision, scale } => {
            let scale = scale as u32;
            let whole = range.map_or(2000, |(_, hi)| hi.max(1) as u64);
            let cap = 10u64.saturating_pow(precision as u32).saturating_sub(1);
            Gen::Decimal {
                scale,
                max_units: (whole * 10u64.pow(scale)).min(cap).max(1),
            }
        }
        FieldType::Bool => Gen::Bool,
        FieldType::Date => {
            let (lo, hi) = range.unwrap_or((-400, 0));
            Gen::Date(lo, hi)
        }
        FieldType::Timestamp => {
            let (lo, hi) = range.unwrap_or((-400, 0));
            Gen::Timestamp(lo, hi)
        }
        FieldType::StringList => Gen::List(
            field
                .sample
                .text
                .as_deref()
                .and_then(word_list)
                .unwrap_or(WORDS),
        ),
    }
}

impl EntityPlan {
    /// The plan of a catalog entity (`catalog` holds the entities its
    /// fields reference).
    pub(crate) fn new(entity: &Entity, catalog: &Catalog) -> EntityPlan {
        let slot = |leaf: &str, field: &Field| Slot {
            key: format!("\"{leaf}\":").into_bytes(),
            field_type: field.field_type,
            required: field.required,
            generator: gen_of(field, catalog),
        };
        let members: Vec<SlotMember> = entity
            .members()
            .iter()
            .map(|member| match member {
                syncvet_model::Member::Field(i) => {
                    let field = &entity.fields[*i];
                    SlotMember::Field(slot(&field.key, field))
                }
                syncvet_model::Member::Object { key, fields } => SlotMember::Object(
                    format!("\"{key}\":").into_bytes(),
                    fields
                        .iter()
                        .map(|(leaf, i)| slot(leaf, &entity.fields[*i]))
                        .collect(),
                ),
            })
            .collect();
        let fields = entity.fields.len();
        let mut plan = EntityPlan {
            name: entity.name.clone(),
            source_type: entity.source,
            id_prefix: entity.id_prefix.clone(),
            members,
            bytes_hint: 24 * fields + 64,
            dirty_targets: Default::default(),
        };
        let mut targets: [Vec<usize>; 3] = Default::default();
        for (n, slot) in plan.slots().enumerate() {
            if matches!(slot.generator, Gen::SourceKey) {
                continue;
            }
            targets[0].push(n);
            if matches!(slot.field_type, FieldType::Date | FieldType::Timestamp) {
                targets[1].push(n);
            }
            if slot.required {
                targets[2].push(n);
            }
        }
        plan.dirty_targets = targets;
        plan
    }

    /// Every slot, nested ones included, in render order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.members.iter().flat_map(|m| match m {
            SlotMember::Field(s) => std::slice::from_ref(s),
            SlotMember::Object(_, slots) => slots.as_slice(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncvet_model::Catalog;

    #[test]
    fn nested_keys_become_one_object_and_references_get_prefixes() {
        let catalog = Catalog::embedded();
        let plan = EntityPlan::new(catalog.entity("patients").unwrap(), &catalog);
        let objects: Vec<_> = plan
            .members
            .iter()
            .filter_map(|m| match m {
                SlotMember::Object(k, slots) => {
                    Some((String::from_utf8(k.clone()).unwrap(), slots.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(objects, vec![("\"primaryVet\":".to_owned(), 2)]);
        assert_eq!(
            plan.slots().count(),
            catalog.entity("patients").unwrap().fields.len()
        );
        let client = plan.slots().find(|s| s.key == b"\"clientId\":").unwrap();
        assert!(matches!(
            client.generator,
            Gen::Text(Text::Reference(ref prefix)) if &**prefix == "cli"
        ));
    }

    #[test]
    fn supplier_invoices_name_a_customer_practice() {
        let catalog = Catalog::embedded();
        let plan = EntityPlan::new(catalog.entity("supplier_invoices").unwrap(), &catalog);
        let practice = plan.slots().find(|s| s.key == b"\"practiceId\":").unwrap();
        assert!(matches!(
            practice.generator,
            Gen::Text(Text::CustomerPractice)
        ));
        let supplier = plan.slots().find(|s| s.key == b"\"supplierId\":").unwrap();
        assert!(matches!(supplier.generator, Gen::SourceKey));
    }

    #[test]
    fn an_entity_of_a_user_catalog_is_generated_from_its_hints_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("labs.toml"),
            r#"entity = "lab_results"
source = "pims"
id_prefix = "lab"
[[fields]]
key = "patientId"
type = "string"
references = "patients"
[[fields]]
key = "technicianContact"
type = "string"
sample = "email"
[[fields]]
key = "resultValue"
type = "int32"
range = [40, 60]
[[fields]]
key = "sampledOn"
type = "date"
range = [-3, -1]
[[fields]]
key = "comment"
type = "string"
"#,
        )
        .unwrap();
        let catalog = Catalog::load(Some(dir.path())).unwrap();
        let plan = EntityPlan::new(catalog.entity("lab_results").unwrap(), &catalog);
        let generator = |key: &str| {
            plan.slots()
                .find(|s| s.key == format!("\"{key}\":").as_bytes())
                .unwrap()
                .generator
                .clone()
        };
        assert_eq!(plan.id_prefix, "lab");
        assert!(matches!(generator("patientId"), Gen::Text(Text::Reference(p)) if &*p == "pat"));
        // Not a name the emulator knows: the hint, not the key, decides.
        assert!(matches!(
            generator("technicianContact"),
            Gen::Text(Text::Email)
        ));
        assert!(matches!(generator("resultValue"), Gen::Int(40, 60)));
        assert!(matches!(generator("sampledOn"), Gen::Date(-3, -1)));
        assert!(matches!(
            generator("comment"),
            Gen::Text(Text::Code("X", 6))
        ));
    }
}
