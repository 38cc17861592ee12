//! Injecting the Cairn entrypoint into an image: one extra layer holding the
//! static `cairn-entrypoint` at [`ENTRYPOINT_PATH`], whose ENTRYPOINT runs it in
//! front of the image's own entrypoint and command (Waypoint's "Injecting
//! Waypoint Entrypoint"). Done as Waypoint did: a container is created from the
//! image (never started), the binary copied in, and the container committed
//! with the new entrypoint.

use std::path::{Path, PathBuf};

use bollard::models::{ContainerConfig, ContainerCreateBody};
use bollard::query_parameters::{
    CommitContainerOptionsBuilder, ListImagesOptionsBuilder, RemoveContainerOptionsBuilder,
    TagImageOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;

use super::engine::engine_error;
use super::{Image, LABEL_ENTRYPOINT};
use crate::{OpContext, PluginError};

/// On an injected image: the id of the image it was made from, and the
/// sha256 of the entrypoint binary put in it. The same image with the same
/// entrypoint is injected once; later builds reuse the result.
const LABEL_INJECTED_FROM: &str = "dev.cairn.injected-from";
const LABEL_ENTRYPOINT_SHA: &str = "dev.cairn.entrypoint-sha256";

/// Where the entrypoint lives inside an image.
pub const ENTRYPOINT_PATH: &str = "/cairn-entrypoint";

/// The environment variable naming the static `cairn-entrypoint` to inject.
pub const STATIC_ENTRYPOINT_VAR: &str = "CAIRN_ENTRYPOINT_STATIC";

/// The static `cairn-entrypoint` to put in images: `$CAIRN_ENTRYPOINT_STATIC`,
/// else `cairn-entrypoint` beside the `cairn` binary when it is static, else
/// (in a source checkout) what `entrypoint/build-static.sh` built.
pub fn entrypoint_binary(self_exe: &Path) -> Result<PathBuf, PluginError> {
    let mut looked = Vec::new();
    if let Some(p) = std::env::var_os(STATIC_ENTRYPOINT_VAR) {
        let p = PathBuf::from(p);
        return match is_static_elf(&p) {
            Ok(true) => Ok(p),
            Ok(false) => Err(PluginError::Failed(format!(
                "{STATIC_ENTRYPOINT_VAR}={} is not a static executable: it would not run in an image without a C library",
                p.display()
            ))),
            Err(e) => Err(PluginError::io(format!("{STATIC_ENTRYPOINT_VAR}={}", p.display()), e)),
        };
    }
    let mut candidates = Vec::new();
    if let Some(dir) = self_exe.parent() {
        candidates.push(dir.join("cairn-entrypoint"));
        // target/<profile>/cairn → target/static/…/release/cairn-entrypoint
        if let Some(target) = dir.parent() {
            candidates
                .push(target.join("static/x86_64-unknown-linux-gnu/release/cairn-entrypoint"));
        }
    }
    for c in candidates {
        if matches!(is_static_elf(&c), Ok(true)) {
            return Ok(c);
        }
        looked.push(c.display().to_string());
    }
    Err(PluginError::Failed(format!(
        "cannot inject the Cairn entrypoint: no static cairn-entrypoint found (looked at {}); build one with entrypoint/build-static.sh and set {STATIC_ENTRYPOINT_VAR}, or set disable_entrypoint = true",
        looked.join(", ")
    )))
}

/// Whether `path` is an ELF executable without a program interpreter (static).
fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Ok(false);
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        if o + 4 > bytes.len() {
            return Ok(false);
        }
        let p_type = u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        if p_type == 3 {
            // PT_INTERP: dynamically linked.
            return Ok(false);
        }
    }
    Ok(true)
}

/// Injects the entrypoint into `image` (on the engine) and records it there.
pub async fn inject(
    docker: &Docker,
    ctx: &mut OpContext,
    image: &mut Image,
) -> Result<(), PluginError> {
    let reference = image.reference();
    let info = docker
        .inspect_image(&reference)
        .await
        .map_err(|e| engine_error(&format!("inspecting {reference}"), e))?;
    let config = info.config.clone().unwrap_or_default();
    let old_entrypoint = config.entrypoint.clone().unwrap_or_default();
    if old_entrypoint.first().map(String::as_str) == Some(ENTRYPOINT_PATH) {
        ctx.info("the image already runs the Cairn entrypoint");
        image.entrypoint = true;
        return Ok(());
    }
    if let Some(arch) = info.architecture.as_deref() {
        if arch != "amd64" {
            return Err(PluginError::Failed(format!(
                "cannot inject the Cairn entrypoint into a {arch} image: the entrypoint is built for amd64 (set disable_entrypoint = true)"
            )));
        }
    }
    let binary = entrypoint_binary(&ctx.self_exe)?;
    ctx.info(&format!(
        "Injecting the Cairn entrypoint ({})",
        binary.display()
    ));
    let source_id = info.id.clone().unwrap_or_default();
    let binary_sha = tokio::task::block_in_place(|| crate::files::sha256_file(&binary))?;
    if let Some(done) = injected_before(docker, &source_id, &binary_sha).await? {
        docker
            .tag_image(
                &done,
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(&image.image)
                        .tag(&image.tag)
                        .build(),
                ),
            )
            .await
            .map_err(|e| engine_error(&format!("tagging {reference}"), e))?;
        image.id = Some(done);
        image.entrypoint = true;
        ctx.info(&format!(
            "{reference} now runs {ENTRYPOINT_PATH} in front of its command (the same image was injected before: reused)"
        ));
        return Ok(());
    }
    let tar = tokio::task::block_in_place(|| one_file_tar(&binary))?;
    let mut entrypoint = vec![ENTRYPOINT_PATH.to_string(), "--".to_string()];
    entrypoint.extend(old_entrypoint);
    let body = ContainerCreateBody {
        image: Some(reference.clone()),
        entrypoint: Some(entrypoint.clone()),
        cmd: config.cmd.clone(),
        labels: Some([(super::LABEL_MANAGED.to_string(), "inject".to_string())].into()),
        ..Default::default()
    };
    let created = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            body,
        )
        .await
        .map_err(|e| engine_error("creating a container to inject the entrypoint", e))?;
    let result = async {
        docker
            .upload_to_container(
                &created.id,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(|e| engine_error("copying the entrypoint into the image", e))?;
        let mut labels = config.labels.clone().unwrap_or_default();
        labels.insert(
            LABEL_ENTRYPOINT.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        );
        labels.insert(LABEL_INJECTED_FROM.to_string(), source_id.clone());
        labels.insert(LABEL_ENTRYPOINT_SHA.to_string(), binary_sha.clone());
        let new_config = ContainerConfig {
            entrypoint: Some(entrypoint),
            cmd: config.cmd.clone(),
            labels: Some(labels),
            ..Default::default()
        };
        docker
            .commit_container(
                CommitContainerOptionsBuilder::default()
                    .container(&created.id)
                    .repo(&image.image)
                    .tag(&image.tag)
                    .comment("cairn: inject the Cairn entrypoint")
                    .pause(false)
                    .build(),
                new_config,
            )
            .await
            .map_err(|e| engine_error("committing the image with the entrypoint", e))
    }
    .await;
    let _ = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    let committed = result?;
    image.id = Some(committed.id);
    image.entrypoint = true;
    ctx.info(&format!(
        "{reference} now runs {ENTRYPOINT_PATH} in front of its command"
    ));
    Ok(())
}

/// An image made by injecting the entrypoint whose sha256 is `binary_sha`
/// into image `source_id`, if the engine still has one.
async fn injected_before(
    docker: &Docker,
    source_id: &str,
    binary_sha: &str,
) -> Result<Option<String>, PluginError> {
    if source_id.is_empty() {
        return Ok(None);
    }
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_INJECTED_FROM}={source_id}"),
            format!("{LABEL_ENTRYPOINT_SHA}={binary_sha}"),
        ],
    )]);
    let found = docker
        .list_images(Some(
            ListImagesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| engine_error("listing images", e))?;
    Ok(found.into_iter().next().map(|i| i.id))
}

/// A tar holding `binary` as `cairn-entrypoint`, mode 0755.
fn one_file_tar(binary: &Path) -> Result<Vec<u8>, PluginError> {
    let data = std::fs::read(binary)
        .map_err(|e| PluginError::io(format!("reading {}", binary.display()), e))?;
    super::context::tar_of(
        &[(ENTRYPOINT_PATH.trim_start_matches('/'), &data[..], 0o755)],
        "packing the entrypoint",
    )
}
