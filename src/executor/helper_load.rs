//! The helper image from a local tarball: `[runners.docker] helper_image_archive` names a
//! `docker save` file on the manager's host (`scripts/build-helper-image.sh --save`), and an
//! engine that lacks the helper image gets it over the Docker API (`POST /images/load`) on its
//! first job — so a new VM needs no registry and no push by hand. Owns only that decision and
//! the upload; making the helper container is `helper.rs`'s, pulling images `pull.rs`'s.

use super::error::{is_not_found, ExecError};
use super::section::RunnerLog;
use bollard::query_parameters::ImportImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use std::path::Path;
use tokio_util::io::ReaderStream;

/// Makes `image` present on `docker` by loading `archive` when the engine lacks it. Returns
/// whether it loaded. An archive that cannot be read, that the engine rejects, or that does
/// not hold `image` is a configuration error naming the file.
pub(super) async fn load_if_absent(
    docker: &Docker,
    log: &RunnerLog,
    image: &str,
    archive: &Path,
) -> Result<bool, ExecError> {
    if present(docker, image).await? {
        return Ok(false);
    }
    let shown = archive.display();
    log.line(&format!(
        "Loading helper image {image} from {shown} (not present on the host)"
    ));
    let started = tokio::time::Instant::now();
    let file = tokio::fs::File::open(archive).await.map_err(|e| {
        ExecError::Configuration(format!(
            "helper_image_archive {shown}: cannot be read ({e}); write it with \
             scripts/build-helper-image.sh --save"
        ))
    })?;
    let options = ImportImageOptionsBuilder::new().quiet(true).build();
    // 1 MiB reads: ReaderStream's default 4 KiB frames made the upload several times slower.
    let body = ReaderStream::with_capacity(file, 1 << 20);
    let mut answers = docker.import_image_stream(options, body, None);
    while let Some(answer) = answers.next().await {
        let info = answer.map_err(|e| ExecError::docker(format!("loading {shown}"), e))?;
        if let Some(detail) = info.error_detail {
            return Err(ExecError::Configuration(format!(
                "helper_image_archive {shown}: the engine refused it: {}",
                detail.message.unwrap_or_default()
            )));
        }
    }
    if !present(docker, image).await? {
        return Err(ExecError::Configuration(format!(
            "helper_image_archive {shown} does not hold {image:?} (its helper_image); \
             write it with scripts/build-helper-image.sh --tag {image} --save {shown}"
        )));
    }
    let secs = started.elapsed().as_secs_f64();
    log.line(&format!("Loaded helper image {image} in {secs:.1}s"));
    tracing::info!(image, archive = %shown, seconds = secs, "loaded the helper image");
    Ok(true)
}

async fn present(docker: &Docker, image: &str) -> Result<bool, ExecError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(ExecError::docker(format!("inspecting image {image:?}"), e)),
    }
}
