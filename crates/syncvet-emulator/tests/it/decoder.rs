//! The emulator's pages through the project's own decoder
//! (`syncvet_model::PageDecoder`): every dirty record is rejected, every
//! other record accepted, drift counted.

use serde_json::value::RawValue;
use syncvet_emulator::{EmulatorConfig, record_count};
use syncvet_model::{Catalog, PageDecoder, SourceType};

use crate::common::{date, start};

#[derive(serde::Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    items: &'a RawValue,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decoder_rejects_exactly_the_dirty_records() {
    let config = EmulatorConfig {
        pims_sources: 1,
        supplier_sources: 1,
        spread: 1.0,
        rows_per_day: 400,
        dirty_rate: 0.1,
        drift_rate: 0.1,
        ..EmulatorConfig::default()
    };
    let h = start(config.clone()).await;
    let catalog = Catalog::embedded();
    let (mut accepted, mut rejected, mut drifted) = (0u64, 0u64, 0u64);
    for entity in catalog.entities() {
        let source = if entity.source == SourceType::Pims {
            "p-0001"
        } else {
            "s-0001"
        };
        let mut decoder = PageDecoder::new(entity.clone(), source);
        let (bodies, _) = h.read_batch(source, &entity.name, 500).await;
        let mut rows = 0u64;
        for body in &bodies {
            let page: Page<'_> = serde_json::from_slice(body).unwrap();
            let decoded = decoder.decode(page.items.get().as_bytes()).unwrap();
            rows += decoded.batch.num_rows() as u64 + decoded.rejects.len() as u64;
            accepted += decoded.batch.num_rows() as u64;
            rejected += decoded.rejects.len() as u64;
            drifted += decoded.unknown_keys.values().sum::<u64>();
        }
        assert_eq!(
            rows,
            record_count(&config, source, &entity.name, date()),
            "{}",
            entity.name
        );
    }
    let stats = h.emulator.stats();
    assert_eq!(
        rejected, stats.dirty_records_served,
        "rejects = dirty records"
    );
    assert_eq!(accepted + rejected, stats.records_served);
    assert!(drifted > 0);
}
