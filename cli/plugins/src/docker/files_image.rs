//! Mapper `files.Artifact` → `docker.Image`: so `build { use "files" }` or
//! `use "command" }` followed by `deploy { use "docker" }` works. The image is
//! the artifact's files under `/app` (the working directory) on an empty base
//! (`FROM scratch`: the engine may have no base image and cannot be assumed to
//! pull one), with the Cairn entrypoint injected. What runs is the docker
//! platform's `command`, so the files must hold it: a static binary, or an
//! interpreter they bring along.
//!
//! The tag is the artifact's sha256, so one artifact is one image, whichever
//! deployment asks for it.

use bollard::query_parameters::BuildImageOptionsBuilder;

use super::build::run_build;
use super::engine::engine;
use super::{inject, repo_component, Image, IMAGE, LABEL_MANAGED};
use crate::files::{Artifact, ARTIFACT};
use crate::{BoxFuture, Mapper, OpContext, PluginError, Value};

/// Where the artifact's files are in the image.
pub const APP_DIR: &str = "/app";

pub const FILES_TO_IMAGE: Mapper = Mapper {
    from: ARTIFACT,
    to: IMAGE,
    f: files_to_image,
};

fn files_to_image<'a>(
    value: &'a Value,
    ctx: &'a mut OpContext,
) -> BoxFuture<'a, Result<Value, PluginError>> {
    Box::pin(async move {
        let artifact: Artifact = value.get::<Artifact>()?;
        let tar = tokio::task::block_in_place(|| context_of(&artifact))?;
        let docker = engine().await?;
        let image = format!(
            "cairn.local/{}/{}",
            repo_component(&ctx.project),
            repo_component(&ctx.app)
        );
        let tag = format!(
            "files-{}",
            &artifact.sha256[..artifact.sha256.len().min(16)]
        );
        let reference = format!("{image}:{tag}");
        ctx.info(&format!(
            "Building image {reference} from {} ({} bytes) under {APP_DIR}",
            artifact.path.display(),
            artifact.size
        ));
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(&reference)
            .rm(true)
            .forcerm(true)
            .build();
        let id = run_build(&docker, ctx, opts, None, tar, &reference).await?;
        let mut built = Image {
            image,
            tag,
            id: Some(id),
            local: true,
            entrypoint: false,
        };
        inject::inject(&docker, ctx, &mut built).await?;
        Value::of(&built)
    })
}

/// The build context: the artifact (which `ADD` unpacks) and a Dockerfile.
fn context_of(artifact: &Artifact) -> Result<Vec<u8>, PluginError> {
    crate::files::check_unchanged(&artifact.path, &artifact.sha256)?;
    let data = std::fs::read(&artifact.path)
        .map_err(|e| PluginError::io(format!("reading {}", artifact.path.display()), e))?;
    let dockerfile = format!(
        "FROM scratch\nADD artifact.tar.gz {APP_DIR}/\nWORKDIR {APP_DIR}\nLABEL {LABEL_MANAGED}=files\n"
    );
    super::context::tar_of(
        &[
            ("Dockerfile", dockerfile.as_bytes(), 0o644),
            ("artifact.tar.gz", &data[..], 0o644),
        ],
        "packing the build context",
    )
}
