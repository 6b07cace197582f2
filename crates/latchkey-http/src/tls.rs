//! Serving https directly (`latchkey serve --tls-cert FILE --tls-key FILE`)
//! with rustls. Behind a reverse proxy that terminates TLS, use plain
//! [`crate::serve`] with `--trusted-proxy` instead.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use latchkey_service::app::App;

/// Load a PEM certificate chain and private key (read errors name the file).
pub async fn load(cert: &Path, key: &Path) -> std::io::Result<RustlsConfig> {
    for f in [cert, key] {
        if !f.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} does not exist", f.display()),
            ));
        }
    }
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("TLS certificate {} / key {}: {e}", cert.display(), key.display()),
        )
    })
}

/// Serve https on `listener` until `shutdown` resolves.
pub async fn serve_tls(
    app: Arc<App>,
    web: crate::WebConfig,
    listener: std::net::TcpListener,
    tls: RustlsConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let housekeeping = latchkey_service::ops::spawn_housekeeping(app.clone());
    let result = axum_server::from_tcp_rustls(listener, tls)?
        .handle(handle)
        .serve(crate::router(app, web).into_make_service_with_connect_info::<SocketAddr>())
        .await;
    housekeeping.abort();
    result
}
