//! Serving https directly (`latchkey serve --tls-cert FILE --tls-key FILE`)
//! with rustls, through the same accept loop, caps and timeouts as plain
//! http ([`crate::connections`]). Behind a reverse proxy that terminates TLS, use plain
//! [`crate::serve`] with `--trusted-proxy` instead.

use std::path::Path;
use std::sync::Arc;

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

/// Serve https on `listener` until `shutdown` resolves, within `limits`
/// (the handshake counts against the header-read timeout).
pub async fn serve_tls(
    app: Arc<App>,
    web: crate::WebConfig,
    limits: crate::ConnLimits,
    listener: tokio::net::TcpListener,
    tls: RustlsConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.get_inner());
    crate::connections::serve(app, web, limits, listener, Some(acceptor), shutdown).await
}
