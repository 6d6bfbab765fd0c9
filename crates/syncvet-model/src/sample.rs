//! Catalog hints for generated data: how the emulator makes realistic
//! values of a field (`sample`, `references`, `range` in a catalog file),
//! so that any entity, an entity of a user's catalog folder included, is
//! generated from its catalog file alone. The decoder ignores them.

use crate::FieldType;

/// The kinds of text the emulator knows how to make (`sample = "…"`).
pub const TEXT_SAMPLES: &[&str] = &[
    "practice_id",
    "first_name",
    "last_name",
    "person_name",
    "pet_name",
    "site_name",
    "product_name",
    "email",
    "phone",
    "street",
    "suite",
    "postal_code",
    "city",
    "state",
    "country",
    "time_zone",
    "species",
    "breed",
    "color",
    "sex",
    "title",
    "contact_method",
    "referral_source",
    "status",
    "appointment_type",
    "room",
    "category",
    "unit",
    "manufacturer",
    "route",
    "strength",
    "weight_unit",
    "currency",
    "alert",
    "microchip",
    "invoice_number",
    "sku",
    "gtin",
    "product_code",
    "notes",
    "text",
];

/// A field's hints for generated data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// A kind of text, one of [`TEXT_SAMPLES`] (string and string-list fields).
    pub text: Option<String>,
    /// The entity whose record ids this string field holds.
    pub references: Option<String>,
    /// Integers: the values; decimals: whole units; dates and timestamps:
    /// days from the batch date. Both ends included.
    pub range: Option<(i64, i64)>,
}

impl Sample {
    /// The hints of a field of `field_type`, checked; the error says which
    /// hint does not fit and why.
    pub(crate) fn parse(
        field_type: FieldType,
        text: Option<String>,
        references: Option<String>,
        range: Option<[i64; 2]>,
    ) -> Result<Sample, String> {
        let textual = matches!(field_type, FieldType::String | FieldType::StringList);
        if let Some(name) = &text {
            if !textual {
                return Err(format!("`sample` is for string fields, not {field_type}"));
            }
            if !TEXT_SAMPLES.contains(&name.as_str()) {
                return Err(format!(
                    "sample `{name}` is not one of: {}",
                    TEXT_SAMPLES.join(", ")
                ));
            }
        }
        if references.is_some() && (field_type != FieldType::String || text.is_some()) {
            return Err("`references` is for string fields without a `sample`".into());
        }
        let range = match range {
            None => None,
            Some([lo, hi]) => {
                let ranged = matches!(
                    field_type,
                    FieldType::Int32
                        | FieldType::Int64
                        | FieldType::Decimal { .. }
                        | FieldType::Date
                        | FieldType::Timestamp
                );
                if !ranged {
                    return Err(format!(
                        "`range` is for integer, decimal, date and timestamp fields, not {field_type}"
                    ));
                }
                if lo > hi {
                    return Err(format!("`range` [{lo}, {hi}] is empty"));
                }
                Some((lo, hi))
            }
        };
        Ok(Sample {
            text,
            references,
            range,
        })
    }
}
