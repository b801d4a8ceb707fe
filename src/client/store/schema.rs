//! The local store's tables. Their names are the client's own: the server's tables of the same
//! purpose have other columns.

diesel::table! {
    verifier_state (id) {
        id -> Integer,
        instance_id -> Text,
        salt -> Text,
        first_started_at -> Timestamp,
        period_start -> Timestamp,
        last_server_time -> Nullable<Timestamp>,
        lease -> Nullable<Text>,
        last_check_in_at -> Nullable<Timestamp>,
        last_result -> Nullable<Text>,
        next_check_in_at -> Nullable<Timestamp>,
        license_key -> Nullable<Text>,
        app_environment -> Nullable<Text>,
        app_recorded_at -> Nullable<Timestamp>,
        app_settings -> Nullable<Text>,
    }
}
diesel::table! {
    report_state (id) {
        id -> Integer,
        install_key -> Text,
        report_sequence -> BigInt,
        report_digest -> Nullable<Text>,
        pending_report -> Nullable<Text>,
    }
}
diesel::table! {
    usage_counts (period_start, kind, name, batch_id) {
        period_start -> Timestamp,
        kind -> Text,
        name -> Text,
        batch_id -> Text,
        count -> BigInt,
    }
}
diesel::table! {
    route_latencies (period_start, method, route, batch_id) {
        period_start -> Timestamp,
        method -> Text,
        route -> Text,
        batch_id -> Text,
        count -> BigInt,
        errors -> BigInt,
        max_ms -> Double,
        sketch -> Text,
    }
}
diesel::table! {
    error_groups (fingerprint, batch_id) {
        fingerprint -> Text,
        batch_id -> Text,
        error_type -> Text,
        message -> Text,
        stack -> Text,
        count -> BigInt,
        first_seen -> Timestamp,
        last_seen -> Timestamp,
    }
}
diesel::table! {
    session_counts (period_start, batch_id) {
        period_start -> Timestamp,
        batch_id -> Text,
        count -> BigInt,
        total_duration_s -> BigInt,
        hourly -> Text,
    }
}
diesel::table! {
    health_checks (name) {
        name -> Text,
        status -> Text,
        checked_at -> Timestamp,
    }
}
diesel::table! {
    seen_users (user_hash) {
        user_hash -> Text,
        last_seen -> Timestamp,
    }
}
diesel::table! {
    pending_tallies (name) {
        name -> Text,
        value -> BigInt,
    }
}
diesel::table! {
    outbox (batch_id) {
        batch_id -> Text,
        created_at -> Timestamp,
        payload -> Text,
        digest -> Text,
        attempts -> Integer,
    }
}
diesel::table! {
    ledger (batch_id) {
        batch_id -> Text,
        acknowledged_at -> Timestamp,
        payload -> Text,
        digest -> Text,
    }
}
