//! How each catalog field is generated: decided once per entity from the
//! field's type, role, listed values and key, so rendering a record is a
//! tight loop over precomputed slots.

use syncvet_model::{Entity, Field, FieldRole, FieldType, SourceType};

/// What kind of value a string field gets.
#[derive(Debug, Clone)]
pub(crate) enum Text {
    /// The record's own id (`pat-20261127-000042`).
    RecordId,
    /// A reference to another record (`cli-20260311-000017`).
    Reference(&'static str),
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
    pub id_prefix: &'static str,
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

/// The id prefix of an entity's records, or of a reference key's target.
pub(crate) fn prefix_of(name: &str) -> &'static str {
    match name {
        "sites" | "site" => "sit",
        "clients" | "client" => "cli",
        "patients" | "patient" => "pat",
        "providers" | "provider" | "primaryVet" => "pro",
        "appointments" | "appointment" => "apt",
        "products" | "product" => "prd",
        "invoices" | "invoice" => "inv",
        "invoice_lines" => "inl",
        "payments" => "pay",
        "reminders" => "rem",
        "vaccinations" => "vac",
        "prescriptions" => "rx",
        "medical_notes" => "note",
        "supplier_products" => "sp",
        "supplier_invoices" => "sinv",
        "supplier_invoice_lines" => "sinl",
        _ => "rec",
    }
}

fn text_of(entity: &str, field: &Field) -> Text {
    if !field.values.is_empty() && field.key != "practiceId" {
        return Text::Listed(field.values.clone());
    }
    let key = field.key.as_str();
    let leaf = key.rsplit('.').next().unwrap_or(key);
    if key == "id" {
        return Text::RecordId;
    }
    if key == "practiceId" {
        return Text::CustomerPractice;
    }
    if leaf == "id" || key.ends_with("Id") {
        let target = key.split('.').next().unwrap_or(key).trim_end_matches("Id");
        return Text::Reference(prefix_of(target));
    }
    let lower = key.to_ascii_lowercase();
    let word = |list: &'static [&'static str]| Text::Word(list);
    match lower.as_str() {
        "firstname" => word(FIRST_NAMES),
        "lastname" => word(LAST_NAMES),
        "primaryvet.name" => Text::PersonName,
        "name" => match entity {
            "patients" => word(PET_NAMES),
            "sites" => word(SITE_NAMES),
            "products" => word(PRODUCTS),
            _ => Text::PersonName,
        },
        "productname" | "drugname" | "vaccinename" => word(PRODUCTS),
        "email" => Text::Email,
        "species" | "speciesdescription" => word(SPECIES),
        "breed" | "breeddescription" => word(BREEDS),
        "color" => word(COLORS),
        "sex" => word(SEXES),
        "title" => word(TITLES),
        "city" => word(CITIES),
        "state" => word(STATES),
        "country" => word(&["US"]),
        "postalcode" => Text::PostalCode,
        "addressline1" => Text::Street,
        "addressline2" => Text::Code("Suite ", 3),
        "timezone" => word(ZONES),
        "preferredcontactmethod" => word(CONTACT),
        "referralsource" => word(REFERRAL),
        "status" => word(STATUS),
        "appointmenttype" => word(APPOINTMENT_TYPES),
        "room" => word(ROOMS),
        "category" => word(CATEGORIES),
        "unitofmeasure" => word(UNITS),
        "manufacturer" | "manufacturername" => word(MANUFACTURERS),
        "route" => word(ROUTES),
        "strength" => word(STRENGTHS),
        "weightunit" => word(WEIGHT_UNITS),
        "currency" => word(CURRENCIES),
        "microchip" => Text::Code("9851", 11),
        "invoicenumber" => Text::Code("INV-", 7),
        "sku" | "supplierproductcode" => Text::Code("SKU-", 6),
        "gtin" => Text::Code("0", 13),
        "code" => Text::Code("P", 5),
        "subjective" | "objective" | "assessment" | "plan" => Text::Prose(8, 30),
        "description" | "reason" | "instructions" => Text::Prose(3, 9),
        _ if lower.starts_with("phone") => Text::Phone,
        _ => Text::Code("X", 6),
    }
}

fn gen_of(entity: &str, field: &Field) -> Gen {
    match field.role {
        FieldRole::SourceKey => return Gen::SourceKey,
        FieldRole::DeletedFlag => return Gen::Deleted,
        FieldRole::Data => {}
    }
    if field.key == "lastModified" {
        return Gen::LastModified;
    }
    let lower = field.key.to_ascii_lowercase();
    match field.field_type {
        FieldType::String => Gen::Text(text_of(entity, field)),
        FieldType::Int32 | FieldType::Int64 => match lower.as_str() {
            "durationminutes" => Gen::Int(10, 120),
            "linenumber" => Gen::Int(1, 25),
            "packsize" => Gen::Int(1, 144),
            _ => Gen::Int(0, 12),
        },
        FieldType::Float64 => Gen::Float(1000.0),
        FieldType::Decimal { precision, scale } => {
            let scale = scale as u32;
            let whole: u64 = if lower.contains("weight") {
                80
            } else if lower.contains("quantity") {
                24
            } else {
                2000
            };
            let cap = 10u64.saturating_pow(precision as u32).saturating_sub(1);
            Gen::Decimal {
                scale,
                max_units: (whole * 10u64.pow(scale)).min(cap).max(1),
            }
        }
        FieldType::Bool => Gen::Bool,
        FieldType::Date => {
            if lower.contains("birth") {
                Gen::Date(-7000, -60)
            } else if lower.contains("due") || lower.contains("expiration") {
                Gen::Date(1, 730)
            } else {
                Gen::Date(-400, 0)
            }
        }
        // Scheduled times may lie ahead of the batch date; records of the past may not.
        FieldType::Timestamp if lower.contains("start") || lower.contains("end") => {
            Gen::Timestamp(-30, 60)
        }
        FieldType::Timestamp => Gen::Timestamp(-400, 0),
        FieldType::StringList => Gen::List(ALERTS),
    }
}

impl EntityPlan {
    /// The plan of a catalog entity.
    pub(crate) fn new(entity: &Entity) -> EntityPlan {
        let slot = |leaf: &str, field: &Field| Slot {
            key: format!("\"{leaf}\":").into_bytes(),
            field_type: field.field_type,
            required: field.required,
            generator: gen_of(&entity.name, field),
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
            id_prefix: prefix_of(&entity.name),
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
        let plan = EntityPlan::new(catalog.entity("patients").unwrap());
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
            Gen::Text(Text::Reference("cli"))
        ));
    }

    #[test]
    fn supplier_invoices_name_a_customer_practice() {
        let catalog = Catalog::embedded();
        let plan = EntityPlan::new(catalog.entity("supplier_invoices").unwrap());
        let practice = plan.slots().find(|s| s.key == b"\"practiceId\":").unwrap();
        assert!(matches!(
            practice.generator,
            Gen::Text(Text::CustomerPractice)
        ));
        let supplier = plan.slots().find(|s| s.key == b"\"supplierId\":").unwrap();
        assert!(matches!(supplier.generator, Gen::SourceKey));
    }
}
