//! hearth: an Ollama-compatible model server in one binary.
//!
//! `main` parses the command line, then starts the server (`serve`) or
//! hands a client verb to `hearth::cli`, which talks to a running server
//! over HTTP; everything else lives in the library (`src/lib.rs`; see
//! ARCHITECTURE.md for the map).

use hearth::{api, cli, config};

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Large language models on edge boxes, through Ollama's API.
#[derive(Debug, Parser)]
#[command(name = "hearth", about, disable_version_flag = true)]
struct Cli {
    /// Show version information.
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server (alias: start).
    #[command(alias = "start")]
    Serve,
    /// Create a model from a Modelfile.
    Create {
        /// The new model's name.
        model: String,
        /// The Modelfile (default: ./Modelfile, else an implicit `FROM .`).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Quantize the weights (q4_K_M, q4_K_S, q8_0, f16, ...).
        #[arg(short = 'q', long = "quantize")]
        quantize: Option<String>,
    },
    /// Show information about a model.
    Show {
        /// The model.
        model: String,
        /// Show the license.
        #[arg(long)]
        license: bool,
        /// Show the Modelfile.
        #[arg(long)]
        modelfile: bool,
        /// Show the parameters.
        #[arg(long)]
        parameters: bool,
        /// Show the system prompt.
        #[arg(long)]
        system: bool,
        /// Show the template.
        #[arg(long)]
        template: bool,
        /// Show the model metadata too.
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Chat with a model: once with a prompt or piped input, else interactively.
    Run {
        /// The model.
        model: String,
        /// The prompt; piped standard input comes before it.
        #[arg(trailing_var_arg = true)]
        prompt: Vec<String>,
        /// How long the model stays loaded (e.g. 5m, 1h, -1 for ever).
        #[arg(long = "keepalive")]
        keep_alive: Option<String>,
        /// Print timings after each answer.
        #[arg(long)]
        verbose: bool,
        /// Answer format (only `json`).
        #[arg(long)]
        format: Option<String>,
        /// Ask a thinking model to think.
        #[arg(long)]
        think: bool,
        /// Do not print the thinking.
        #[arg(long = "hidethinking")]
        hide_thinking: bool,
        /// Print answers unbroken instead of wrapping them between words.
        #[arg(long = "nowordwrap")]
        no_word_wrap: bool,
        /// Pull the model over plain http if it is not here yet.
        #[arg(long)]
        insecure: bool,
    },
    /// Unload a running model.
    Stop {
        /// The model.
        model: String,
    },
    /// Pull a model from a registry.
    Pull {
        /// The model.
        model: String,
        /// Allow an insecure registry.
        #[arg(long)]
        insecure: bool,
    },
    /// Push a model to a registry (no authentication: for registries that
    /// accept anonymous uploads, such as a hearth with HEARTH_SERVE_REGISTRY=1).
    Push {
        /// The model.
        model: String,
        /// Allow an insecure registry.
        #[arg(long)]
        insecure: bool,
    },
    /// List models (alias: ls).
    #[command(alias = "ls")]
    List {
        /// Only names starting with this.
        prefix: Option<String>,
    },
    /// List running models.
    Ps,
    /// Copy a model.
    Cp {
        /// The model to copy.
        source: String,
        /// The new name.
        destination: String,
    },
    /// Remove models.
    Rm {
        /// The models.
        #[arg(required = true)]
        models: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = config::Config::from_env();
    env_logger::Builder::new()
        .filter_level(match config.debug_level {
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        })
        .format_target(false)
        .init();
    // One line, as Ollama prints it: the server's own words where there are
    // some, the context chain otherwise.
    match dispatch(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`hearth list | head -1`) is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn dispatch(cli: Cli, config: config::Config) -> anyhow::Result<()> {
    if cli.version {
        return cli::version();
    }
    let Some(command) = cli.command else {
        use clap::CommandFactory as _;
        Cli::command().print_help()?;
        return Ok(());
    };
    match command {
        Command::Serve => serve(config),
        verb => client_verb(verb),
    }
}

/// A verb that talks to a running server.
fn client_verb(command: Command) -> anyhow::Result<()> {
    let client = cli::connect();
    match command {
        Command::Serve => serve(config::Config::from_env()),
        Command::Create {
            model,
            file,
            quantize,
        } => cli::create::create(&client, &model, file.as_deref(), quantize.as_deref()),
        Command::Show {
            model,
            license,
            modelfile,
            parameters,
            system,
            template,
            verbose,
        } => {
            use cli::show::Field;
            let fields: Vec<Field> = [
                (license, Field::License),
                (modelfile, Field::Modelfile),
                (parameters, Field::Parameters),
                (system, Field::System),
                (template, Field::Template),
            ]
            .into_iter()
            .filter_map(|(on, f)| on.then_some(f))
            .collect();
            if fields.len() > 1 {
                anyhow::bail!("only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified");
            }
            cli::show::show(&client, &model, fields.first().copied(), verbose)
        }
        Command::Run {
            model,
            prompt,
            keep_alive,
            verbose,
            format,
            think,
            hide_thinking,
            no_word_wrap,
            insecure,
        } => cli::run::run(
            &client,
            &model,
            &prompt,
            cli::run::RunOptions {
                keep_alive,
                format,
                verbose,
                think,
                hide_thinking,
                insecure,
                no_word_wrap,
            },
        ),
        Command::Stop { model } => cli::stop(&client, &model),
        Command::Pull { model, insecure } => cli::pull::pull(&client, &model, insecure),
        Command::Push { model, insecure } => cli::pull::push(&client, &model, insecure),
        Command::List { prefix } => cli::list(&client, prefix.as_deref()),
        Command::Ps => cli::ps(&client),
        Command::Cp {
            source,
            destination,
        } => cli::copy(&client, &source, &destination),
        Command::Rm { models } => cli::remove(&client, &models),
    }
}

fn serve(config: config::Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // HTTP is light work; inference runs on its own threads, so two
        // async workers are plenty and keep idle memory small.
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    // As `ollama serve` does: the key registries may ask a pull to sign
    // with exists from the first start, so its public key can be shown and
    // registered before it is needed. A read-only home is no reason not to
    // serve; a pull that needs the key tries again.
    match hearth::registry::auth::Key::ensure(&config.key_dir) {
        Ok(Some(line)) => log::info!(
            "generated a new key pair in {}; your public key is: {line}",
            config.key_dir.display()
        ),
        Ok(None) => {}
        Err(e) => log::warn!("no registry key: {e}"),
    }
    runtime.block_on(async move {
        let bind = config.bind;
        let models = config.models_dir.clone();
        let keys = hearth::access::KeyStore::new(
            &config.api_keys,
            &config.inference_keys,
            config.api_keys_file.as_deref(),
        )
        .map_err(anyhow::Error::msg)
        .context("read the API keys")?;
        let (admin, inference) = keys.current().counts();
        if admin + inference > 0 {
            log::info!("API keys required: {admin} admin, {inference} inference");
        }
        if config.read_only {
            log::info!("read-only: create, copy, delete, pull, push and uploads are refused");
        }
        let tls = match &config.tls {
            None => None,
            Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
                hearth::tls::server_config(cert, key)
                    .map_err(anyhow::Error::msg)
                    .context("set up HTTPS (HEARTH_TLS_CERT, HEARTH_TLS_KEY)")?,
            )),
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = api::app(config, keys)
            .with_context(|| format!("open the model store at {}", models.display()))?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("listen on {bind}"))?;
        let local = listener.local_addr().context("read the bound address")?;
        log::info!(
            "Listening on {local} ({scheme}, version {}), models in {}, ready in {:?}",
            env!("CARGO_PKG_VERSION"),
            models.display(),
            started.elapsed()
        );
        log::info!(
            "built for {} with ggml kernels: {}",
            hearth::build_info::TARGET,
            hearth::build_info::KERNELS
        );
        api::serve(state, listener, tls).await.context("serve")
    })
}
