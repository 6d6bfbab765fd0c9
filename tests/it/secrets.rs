//! Issue 7.4: secrets never leave the process. Full syncs with known,
//! unique secret values (the API client secret from the environment, cloud
//! storage keys in the environment and in the lake options), at debug log
//! level in both log formats, plus `validate`, `report` and a refused
//! secret; then every byte of output and every file of the lake is searched.

use syncvet_e2e::{Store, TestEmulator, walk};
use syncvet_emulator::EmulatorConfig;

const DATE: &str = "2026-10-02";

fn unique(label: &str) -> String {
    format!("{label}-{:016x}", rand::random::<u64>())
}

fn assert_absent(secrets: &[&str], what: &str, text: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "a secret ({}…) appears in {what}",
            &secret[..8]
        );
    }
}

#[test]
fn no_log_line_report_error_or_lake_file_contains_a_secret() {
    let client_secret = unique("client-secret");
    let wrong_secret = unique("wrong-secret");
    let aws_secret = unique("aws-secret");
    let azure_key = unique("azure-key");
    let settings = EmulatorConfig {
        client_secret: client_secret.clone(),
        pims_sources: 1,
        supplier_sources: 1,
        rows_per_day: 40,
        dirty_rate: 0.1,
        token_ttl_secs: 2,
        error_rate_503: 0.05,
        ..EmulatorConfig::default()
    };
    let emulator = TestEmulator::start(settings);
    let lake = Store::File.lake("secrets");
    let base = emulator
        .etl(&lake.url)
        .env("AWS_SECRET_ACCESS_KEY", &aws_secret)
        .env("AZURE_STORAGE_ACCOUNT_KEY", &azure_key)
        .env(
            "SYNCVET_ETL__LAKE__OPTIONS__AWS_SECRET_ACCESS_KEY",
            &aws_secret,
        )
        .env("RUST_LOG", "debug");
    let secrets = [
        client_secret.as_str(),
        wrong_secret.as_str(),
        aws_secret.as_str(),
        azure_key.as_str(),
    ];

    let runs = [
        base.clone()
            .args(["--log-format", "json", "run", "--date", DATE]),
        base.clone().args(["run", "--date", DATE, "--force"]),
        base.clone().args(["--log-format", "json", "validate"]),
        base.clone().args(["report"]),
        base.clone().args(["report", "--json"]),
        base.clone()
            .env("SYNCVET_CLIENT_SECRET", &wrong_secret)
            .args(["run", "--date", DATE]),
        base.clone()
            .env("SYNCVET_CLIENT_SECRET", &wrong_secret)
            .args(["--log-format", "json", "validate"]),
    ];
    let mut codes = Vec::new();
    for run in runs {
        let out = run.run();
        codes.push(out.code);
        assert!(!out.stderr.is_empty(), "debug logging produced output");
        assert_absent(&secrets, "stdout", &out.stdout);
        assert_absent(&secrets, "stderr", &out.stderr);
    }
    assert_eq!(
        codes,
        [
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(0),
            Some(1),
            Some(1)
        ],
        "exit codes of the runs"
    );
    let root = lake.local_root();
    let files = walk(&root);
    assert!(
        files.iter().any(|f| f.starts_with("_quarantine/")),
        "quarantine written (raw records are searched too)"
    );
    for file in files {
        let bytes = std::fs::read(root.join(&file)).unwrap();
        assert_absent(&secrets, &file, &String::from_utf8_lossy(&bytes));
    }
}
