//! The database schema, for both backends. Kept by hand in step with `migrations/`; the test
//! `schema_matches_migrations` checks every table and column against both databases.

diesel::table! {
    licenses (id) {
        id -> Text,
        kid -> Text,
        licensee -> Text,
        tier -> Text,
        seats -> Integer,
        features -> Text,
        issued_at -> Timestamp,
        not_before -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        check_in_interval_s -> Nullable<BigInt>,
        license_key -> Nullable<Text>,
        revoked_at -> Nullable<Timestamp>,
        revoked_reason -> Nullable<Text>,
        first_seen_at -> Timestamp,
        last_check_in_at -> Nullable<Timestamp>,
        issued_here -> Bool,
    }
}

diesel::table! {
    instances (id, license_id) {
        id -> Text,
        license_id -> Text,
        software_version -> Text,
        first_seen_at -> Timestamp,
        last_check_in_at -> Timestamp,
        last_status -> Text,
        seat_until -> Nullable<Timestamp>,
        exemption -> Nullable<Text>,
        install_id -> Nullable<Text>,
        install_source -> Nullable<Text>,
        machine -> Nullable<Text>,
    }
}

diesel::table! {
    license_terms (license_id) {
        license_id -> Text,
        private_exemption -> Nullable<Bool>,
        max_loopback -> Nullable<Integer>,
        overage_started_at -> Nullable<Timestamp>,
        max_processes -> Nullable<Integer>,
        max_machines -> Nullable<Integer>,
    }
}

diesel::table! {
    check_ins (id) {
        id -> BigInt,
        instance_id -> Text,
        license_id -> Nullable<Text>,
        at -> Timestamp,
        status -> Text,
        software_version -> Text,
        telemetry_batch_id -> Nullable<Text>,
        valid_until -> Nullable<Timestamp>,
        imported_report -> Nullable<BigInt>,
    }
}

diesel::table! {
    telemetry_batches (batch_id) {
        batch_id -> Text,
        instance_id -> Text,
        license_id -> Text,
        received_at -> Timestamp,
        period_start -> Timestamp,
        period_end -> Timestamp,
        digest -> Text,
        app_version -> Text,
        user_count_range -> Text,
        environment -> Text,
        dropped -> Text,
        redactions -> Text,
    }
}

diesel::table! {
    telemetry_payloads (batch_id) {
        batch_id -> Text,
        received_at -> Timestamp,
        body -> Binary,
    }
}

diesel::table! {
    telemetry_features (instance_id, license_id, day, kind, name) {
        instance_id -> Text,
        license_id -> Text,
        day -> Date,
        kind -> Text,
        name -> Text,
        count -> BigInt,
        install_id -> Nullable<Text>,
    }
}

diesel::table! {
    telemetry_errors (instance_id, license_id, fingerprint) {
        instance_id -> Text,
        license_id -> Text,
        fingerprint -> Text,
        error_type -> Text,
        message -> Text,
        stack -> Text,
        count -> BigInt,
        first_seen -> Timestamp,
        last_seen -> Timestamp,
    }
}

diesel::table! {
    telemetry_aggregates (day, metric, dimension) {
        day -> Date,
        metric -> Text,
        dimension -> Text,
        value -> Double,
        instances -> BigInt,
        reach -> Text,
    }
}

diesel::table! {
    released_processes (license_id, instance_id) {
        license_id -> Text,
        instance_id -> Text,
        install_id -> Text,
        released_at -> Timestamp,
    }
}

diesel::table! {
    install_days (day, license_id, install_id) {
        day -> Date,
        license_id -> Text,
        install_id -> Text,
        tier -> Text,
        software_version -> Text,
        lease_until -> Timestamp,
        checked_in -> Bool,
        user_count_range -> Text,
        os -> Text,
        arch -> Text,
        modules -> Text,
        uptime_hours -> Double,
        health -> Text,
    }
}

diesel::table! {
    route_days (day, method, route, software_version) {
        day -> Date,
        method -> Text,
        route -> Text,
        software_version -> Text,
        count -> BigInt,
        errors -> BigInt,
        p50_ms -> Double,
        p95_ms -> Double,
        p99_ms -> Double,
        max_ms -> Double,
        sketch -> Text,
        installs -> BigInt,
    }
}

diesel::table! {
    dashboard_sessions (token_hash) {
        token_hash -> Text,
        csrf -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
        token_name -> Text,
        scope -> Text,
        token_proof -> Text,
    }
}

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        url -> Text,
        events -> Text,
        secret -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (event_id, endpoint_id) {
        event_id -> Text,
        endpoint_id -> Text,
        event_type -> Text,
        payload -> Text,
        created_at -> Timestamp,
        next_attempt_at -> Timestamp,
        attempts -> Integer,
        claimed_until -> Nullable<Timestamp>,
        delivered_at -> Nullable<Timestamp>,
        gave_up_at -> Nullable<Timestamp>,
        last_status -> Nullable<Integer>,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> BigInt,
        at -> Timestamp,
        actor -> Text,
        action -> Text,
        target -> Text,
        status -> Integer,
        request_id -> Text,
    }
}

diesel::table! {
    job_runs (job, run_key) {
        job -> Text,
        run_key -> Text,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        outcome -> Nullable<Text>,
    }
}

diesel::table! {
    install_keys (license_id, instance_id) {
        license_id -> Text,
        instance_id -> Text,
        public_key -> Text,
        report_sequence -> BigInt,
        report_digest -> Text,
        pinned_at -> Timestamp,
        imported_at -> Timestamp,
    }
}

diesel::table! {
    public_names (kind, name) {
        kind -> Text,
        name -> Text,
        marked_at -> Timestamp,
    }
}

diesel::table! {
    public_publications (period_from) {
        period_from -> Date,
        body -> Text,
        computed_at -> Timestamp,
    }
}

diesel::joinable!(instances -> licenses (license_id));

diesel::allow_tables_to_appear_in_same_query!(
    public_names,
    public_publications,
    licenses,
    instances,
    license_terms,
    check_ins,
    telemetry_batches,
    telemetry_payloads,
    telemetry_features,
    telemetry_errors,
    telemetry_aggregates,
    install_days,
    released_processes,
    route_days,
    dashboard_sessions,
    audit_log,
    webhook_endpoints,
    webhook_deliveries,
    job_runs,
    install_keys,
);
