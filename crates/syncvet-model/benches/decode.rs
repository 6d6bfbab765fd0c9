//! Single-threaded decode throughput for `patients`: pages of 1000 synthetic
//! records with every field filled, as the emulator serves them.
//!
//! `cargo bench -p syncvet-model` (set `DECODE_BENCH_PAGES` for more pages).

use std::hint::black_box;
use std::time::Instant;

use syncvet_model::{Catalog, PageDecoder};

const RECORDS_PER_PAGE: usize = 1000;

fn patient(i: usize) -> String {
    let species = ["Canine", "Feline", "Equine", "Avian"][i % 4];
    let name = ["Rex", "Bella", "Max", "Luna", "Chloé", "O'Malley"][i % 6];
    format!(
        concat!(
            r#"{{"id":"pat-{i:08}","lastModified":"2026-11-27T{h:02}:{m:02}:{s:02}.{us:06}+01:00","deleted":{del},"#,
            r#""practiceId":"p-0001","clientId":"cli-{c:07}","siteId":"site-{site}","name":"{name}","#,
            r#""species":"{species}","speciesDescription":"{species} (domestic)","breed":"B{b}","#,
            r#""breedDescription":"Breed number {b} of the registry","color":"Brown/White","sex":"{sex}","#,
            r#""isNeutered":{neut},"isDeceased":false,"isActive":"true","dateOfBirth":"20{y:02}-{mo:02}-{d:02}","#,
            r#""dateOfDeath":null,"weight":{w}.{wf:03},"weightUnit":"kg","microchip":"985112{chip:09}","#,
            r#""rabiesTag":"RT-{i}","primaryVet":{{"id":"prov-{v:03}","name":"Dr. Vet {v}"}},"#,
            r#""enteredDate":"2019-0{mo1}-1{d1}T08:30:00Z","lastVisitDate":"2026-11-{d:02}","#,
            r#""alerts":{alerts}}}"#
        ),
        i = i,
        h = i % 24,
        m = i % 60,
        s = (i * 7) % 60,
        us = (i * 7919) % 1_000_000,
        del = i.is_multiple_of(50),
        c = i * 3 % 1_000_000,
        site = i % 5,
        name = name,
        species = species,
        b = i % 300,
        sex = ["M", "F", "MN", "FS"][i % 4],
        neut = i.is_multiple_of(3),
        y = i % 26,
        mo = 1 + i % 12,
        d = 1 + i % 28,
        w = 1 + i % 80,
        wf = i % 1000,
        chip = i,
        v = i % 40,
        mo1 = 1 + i % 9,
        d1 = i % 10,
        alerts = if i.is_multiple_of(4) {
            r#"["Aggressive","Diabetic"]"#
        } else {
            "[]"
        },
    )
}

fn main() {
    let pages_n: usize = std::env::var("DECODE_BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let pages: Vec<Vec<u8>> = (0..pages_n)
        .map(|p| {
            let records: Vec<String> = (0..RECORDS_PER_PAGE)
                .map(|r| patient(p * RECORDS_PER_PAGE + r))
                .collect();
            format!("[{}]", records.join(",")).into_bytes()
        })
        .collect();
    let bytes: usize = pages.iter().map(Vec::len).sum();
    let entity = Catalog::embedded().entity("patients").unwrap().clone();
    let mut decoder = PageDecoder::new(entity, "p-0001");

    // Warm-up page, and a check that the synthetic data is all clean.
    let first = decoder.decode(&pages[0]).unwrap();
    assert!(first.rejects.is_empty(), "{:?}", first.rejects.first());
    assert_eq!(first.batch.num_rows(), RECORDS_PER_PAGE);

    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        for page in &pages {
            black_box(decoder.decode(page).unwrap());
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    let records = pages_n * RECORDS_PER_PAGE;
    println!(
        "decode patients: {records} records, {:.1} MB of JSON ({} B/record), best of 3: {:.3} s \
         → {:.0} records/s, {:.1} MB/s (single thread)",
        bytes as f64 / 1e6,
        bytes / records,
        best,
        records as f64 / best,
        bytes as f64 / 1e6 / best
    );
}
