//! Signals have one owner: SIGQUIT, SIGTERM, SIGINT and SIGHUP become [`Control`] messages.
