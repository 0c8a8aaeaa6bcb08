//! `hearth create`: reads a Modelfile, hashes and uploads the local files
//! it names (only those the server lacks), then sends `/api/create` and
//! shows its status stream. Parsing the Modelfile is `cli::modelfile`'s
//! job; building layers and manifests is the server's.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{json, Map, Value};
use sha2::Digest as _;

use super::client::Client;
use super::modelfile::{self, Instruction};
use super::progress::Progress;

/// Runs `hearth create NAME [-f FILE] [-q QUANT]`.
pub fn create(
    client: &Client,
    name: &str,
    file: Option<&Path>,
    quantize: Option<&str>,
) -> anyhow::Result<()> {
    let (text, base) = read_modelfile(file)?;
    let instructions = modelfile::parse(&text)?;
    let mut progress = Progress::new();
    progress.status("gathering model components");
    let mut req = request(&instructions, &base)?;
    req.insert("model".into(), Value::String(name.to_string()));
    if let Some(q) = quantize {
        req.insert("quantize".into(), Value::String(q.to_string()));
    }
    for field in ["files", "adapters"] {
        let Some(Value::Object(files)) = req.get_mut(field) else {
            continue;
        };
        for value in files.values_mut() {
            let path = PathBuf::from(value.as_str().unwrap_or_default());
            let digest = upload(client, &path, &mut progress)?;
            *value = Value::String(digest);
        }
    }
    client.stream("/api/create", &Value::Object(req), |line| {
        progress.line(line);
        Ok(())
    })?;
    progress.finish();
    Ok(())
}

/// The Modelfile's text and the directory its paths are relative to: the
/// file given with `-f`, else `./Modelfile`, else an implicit `FROM .`.
fn read_modelfile(file: Option<&Path>) -> anyhow::Result<(String, PathBuf)> {
    let dir_of = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    anyhow::anyhow!("specified Modelfile wasn't found: {}", f.display())
                }
                _ => anyhow::anyhow!("read {}: {e}", f.display()),
            })?;
            Ok((text, dir_of(f)))
        }
        None => match std::fs::read_to_string("Modelfile") {
            Ok(text) => Ok((text, PathBuf::from("."))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(("FROM .\n".to_string(), PathBuf::from(".")))
            }
            Err(e) => Err(e).context("read ./Modelfile"),
        },
    }
}

/// Turns instructions into a create request. Local files go into `files`
/// and `adapters` as `{key: local path}`; [`create`] swaps each path for
/// its digest once the blob is on the server.
fn request(instructions: &[Instruction], base: &Path) -> anyhow::Result<Map<String, Value>> {
    let mut req = Map::new();
    let mut params = Vec::new();
    let mut licenses = Vec::new();
    let mut messages = Vec::new();
    for i in instructions {
        match i {
            Instruction::From(v) => {
                let path = base.join(v);
                if path.exists() {
                    req.insert("files".into(), local_files(&path)?);
                } else {
                    req.insert("from".into(), Value::String(v.clone()));
                }
            }
            Instruction::Adapter(v) => {
                let path = base.join(v);
                if !path.exists() {
                    anyhow::bail!("adapter {} does not exist", path.display());
                }
                req.insert("adapters".into(), local_files(&path)?);
            }
            Instruction::Parameter { key, value } => params.push((key.clone(), value.clone())),
            Instruction::Template(t) => {
                req.insert("template".into(), Value::String(t.clone()));
            }
            Instruction::System(s) => {
                req.insert("system".into(), Value::String(s.clone()));
            }
            Instruction::License(l) => licenses.push(Value::String(l.clone())),
            Instruction::Message { role, content } => {
                messages.push(json!({"role": role, "content": content}));
            }
            Instruction::Other(name, value) => match name.as_str() {
                // Sent as Ollama sends them; the server ignores what it does not use.
                "renderer" | "parser" | "requires" => {
                    req.insert(name.clone(), Value::String(value.clone()));
                }
                _ => eprintln!(
                    "warning: {} is not supported and was ignored",
                    name.to_uppercase()
                ),
            },
        }
    }
    let (parameters, dropped) = modelfile::parameters(&params)?;
    for key in dropped {
        eprintln!("warning: parameter {key} is deprecated");
    }
    if !parameters.is_empty() {
        req.insert("parameters".into(), Value::Object(parameters));
    }
    if !licenses.is_empty() {
        req.insert("license".into(), Value::Array(licenses));
    }
    if !messages.is_empty() {
        req.insert("messages".into(), Value::Array(messages));
    }
    Ok(req)
}

/// The files a `FROM`/`ADAPTER` path stands for, keyed as the server will
/// see them: a file by its name, a directory's files by their path inside
/// it (so a nested `1_Pooling/config.json` keeps its folder).
fn local_files(path: &Path) -> anyhow::Result<Value> {
    let mut out = BTreeMap::new();
    if path.is_dir() {
        for f in model_dir_files(path)? {
            let rel = f
                .strip_prefix(path)
                .expect("files listed under a directory start with its path");
            let key: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.insert(key.join("/"), f.display().to_string());
        }
    } else {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .context("FROM names a file without a name")?;
        out.insert(name, path.display().to_string());
    }
    Ok(json!(out))
}

/// The files of a model directory, chosen as Ollama chooses them: the
/// weights of the first kind present (Safetensors, PyTorch, GGUF, `.bin`),
/// plus JSON configs (also one folder down, where sentence-transformers
/// keep theirs), the chat template and a SentencePiece tokenizer.
fn model_dir_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let list = |d: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    let top = list(dir);
    let subdirs: Vec<PathBuf> = top.iter().filter(|p| p.is_dir()).cloned().collect();
    let nested: Vec<PathBuf> = subdirs.iter().flat_map(|d| list(d)).collect();
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let pick = |files: &[PathBuf], pred: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        files
            .iter()
            .filter(|p| p.is_file() && pred(&name(p)))
            .cloned()
            .collect()
    };
    let weight_kinds: [&dyn Fn(&str) -> bool; 5] = [
        &|n| n.ends_with(".safetensors"),
        &|n| n.starts_with("pytorch_model") && n.ends_with(".bin"),
        &|n| n.starts_with("consolidated") && n.ends_with(".pth"),
        &|n| n.ends_with(".gguf"),
        &|n| n.ends_with(".bin"),
    ];
    let mut files = weight_kinds
        .iter()
        .map(|pred| pick(&top, pred))
        .find(|found| !found.is_empty())
        .with_context(|| format!("no safetensors or torch files found in {}", dir.display()))?;
    files.extend(pick(&top, &|n| {
        n.ends_with(".json") || n == "chat_template.jinja"
    }));
    files.extend(pick(&nested, &|n| n.ends_with(".json")));
    let tokenizer = pick(&top, &|n| n == "tokenizer.model");
    if tokenizer.is_empty() {
        files.extend(pick(&nested, &|n| n == "tokenizer.model"));
    } else {
        files.extend(tokenizer);
    }
    files.dedup();
    Ok(files)
}

/// Hashes a file and uploads it unless the server has it; returns its digest.
fn upload(client: &Client, path: &Path, progress: &mut Progress) -> anyhow::Result<String> {
    let open = || std::fs::File::open(path).with_context(|| format!("open {}", path.display()));
    let len = open()?.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress.bytes(&format!("hashing {}", path.display()), len);
    let mut hasher = sha2::Sha256::new();
    let mut file = open()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let digest = format!("sha256:{hex}");
    if !client.has_blob(&digest)? {
        let bar = progress.bytes(&format!("copying file {digest}"), len);
        client
            .upload_blob(&digest, len, bar.wrap_read(open()?))
            .with_context(|| format!("upload {}", path.display()))?;
        bar.finish();
    }
    Ok(digest)
}
