DROP TABLE report_state;
