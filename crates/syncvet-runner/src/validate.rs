//! `syncvet-etl validate`: the configuration checked end to end without
//! writing: the token, the sources, and the first page of each entity of
//! one source, decoded by the same path a sync takes. It opens the catalog
//! and the API, never the lake.

use chrono::{NaiveDate, Utc};
use syncvet_client::{ApiClient, PageEvent};
use syncvet_model::{Catalog, Chain, PageDecoder};

use crate::RunnerError;
use crate::config::Config;
use crate::plan::{Dates, discover, select_entities};

/// Checks the configuration end to end without writing: the token, the
/// sources, and the first page of each entity of one source, decoded.
pub async fn validate(
    config: &Config,
    practice: Option<&str>,
) -> Result<Vec<(String, Result<String, String>)>, RunnerError> {
    let catalog = Catalog::load(config.sync.catalog_dir.as_deref())?;
    let client = ApiClient::new(&config.api, config.api.resolve_secret()?)?;
    client.check_auth().await?;
    let requested: Vec<String> = practice.map(str::to_owned).into_iter().collect();
    let (sources, failures) = discover(&client, &config.sync, None, &requested).await?;
    if let Some(f) = failures.first() {
        return Err(RunnerError::config(
            "sync.practices",
            format!("{}: {}", f.source_id, f.error),
        ));
    }
    let Some(source) = sources.first() else {
        return Err(RunnerError::config(
            "sync.practices",
            "the API lists no source to read",
        ));
    };
    let names = &config.sync.entities;
    let mut results = Vec::new();
    let date = Dates::Recent { days: 1 }.for_source(source, Utc::now(), config.sync.lag_days)[0];
    for entity in select_entities(&catalog, names)?
        .into_iter()
        .filter(|e| e.source == source.source_type)
    {
        let mut stream = client.batch(&source.id, &entity.name, date);
        let outcome = match stream.next().await {
            Some(Ok(PageEvent::Page(page))) => {
                match PageDecoder::new(entity.clone(), &source.id)
                    .decode_records(&page.items, &page.records)
                {
                    Ok(d) => Ok(format!(
                        "{} rows, {} rejects, {} unknown keys (first page of {} {date})",
                        d.batch.num_rows(),
                        d.rejects.len(),
                        d.unknown_keys.len(),
                        source.id
                    )),
                    Err(e) => Err(Chain(&e).to_string()),
                }
            }
            Some(Ok(PageEvent::Restarted)) => Ok("restarted".into()),
            Some(Err(e)) => Err(Chain(&e).to_string()),
            None => Err("no page".into()),
        };
        results.push((entity.name.clone(), outcome));
    }
    let probed = select_entities(&catalog, names)?
        .into_iter()
        .find(|e| e.source == source.source_type);
    if let Some(entity) = probed {
        let outcome = probe_continuation(&client, &source.id, &entity.name, date).await;
        results.push(("(continuation)".to_string(), outcome));
    }
    Ok(results)
}

/// Reads the first two pages of one record each: a server that ignores
/// the continuation parameter serves the first page again, which the
/// page stream reports naming `api.params.continuation_token`.
async fn probe_continuation(
    client: &ApiClient,
    source: &str,
    entity: &str,
    date: NaiveDate,
) -> Result<String, String> {
    let mut stream = client.batch(source, entity, date).with_page_size(1);
    let mut pages = 0;
    while pages < 2 {
        match stream.next().await {
            Some(Ok(PageEvent::Page(_))) => pages += 1,
            Some(Ok(PageEvent::Restarted)) => pages = 0,
            Some(Err(e)) => return Err(Chain(&e).to_string()),
            None => break,
        }
    }
    Ok(match pages {
        2 => format!(
            "pages 1 and 2 of {source}/{entity}/{date} differ: the continuation token is followed"
        ),
        _ => format!("not checked: {source}/{entity}/{date} has fewer than two records"),
    })
}
