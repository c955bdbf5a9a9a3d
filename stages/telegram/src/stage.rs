//! The pipeline stage around the parser.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tigerflow_stage::{Context, InputSlot, ParamError, Params, Reporter, StageError, TypedStage};

use crate::export::ChatSelector;
use crate::local_time::parse_offset;
use crate::table;

pub struct TelegramStage;

/// Parameters of `uses = "telegram"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramParams {
    /// The chat to read, by its `id` in the export (needed for an account export with several
    /// chats; checked against a single-chat export). Default: unset.
    pub chat_id: Option<i64>,
    /// The chat to read by name, when no other chat has that name. Default: unset.
    pub chat: Option<String>,
    /// UTC offset (`+HH:MM`) of the computer that wrote an export older than Telegram
    /// Desktop 3.7.6, whose dates are local time without a zone. Default: `"+00:00"`.
    pub utc_offset: String,
}

impl Default for TelegramParams {
    fn default() -> Self {
        TelegramParams {
            chat_id: None,
            chat: None,
            utc_offset: "+00:00".to_owned(),
        }
    }
}

impl Params for TelegramParams {
    fn validate(&self) -> Result<(), ParamError> {
        if parse_offset(&self.utc_offset).is_none() {
            return Err(ParamError::new(
                &["utc_offset"],
                format!(
                    "must be an offset like \"+03:00\" or \"-05:30\" (got {:?}); fix: write the offset of the exporting computer's clock",
                    self.utc_offset
                ),
            ));
        }
        Ok(())
    }
}

pub(crate) const MESSAGES_FILE: &str = "messages.parquet";
pub(crate) const REPORT_FILE: &str = "report.json";

impl TypedStage for TelegramStage {
    const KIND: &'static str = "telegram";
    const CODE_VERSION: u32 = 1;
    const INPUTS: &'static [InputSlot] = &[InputSlot {
        name: "export",
        required: true,
        help: "a Telegram Desktop `result.json` (single chat or whole account)",
    }];
    type Params = TelegramParams;

    fn outputs(&self, _params: &TelegramParams) -> Vec<PathBuf> {
        vec![MESSAGES_FILE.into(), REPORT_FILE.into()]
    }

    fn run(&self, params: &TelegramParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let path = ctx.input("export")?.to_path_buf();
        let file = File::open(&path)
            .map_err(|e| StageError::io(format!("opening {}", path.display()), e))?;
        let size = file.metadata().map(|m| m.len()).ok();
        ctx.reporter.begin("parse", size, "bytes");
        let selector = ChatSelector {
            id: params.chat_id,
            name: params.chat.clone(),
        };
        let offset = parse_offset(&params.utc_offset).unwrap_or(0);
        let reader = Progress {
            inner: file,
            read: 0,
            reporter: ctx.reporter,
        };
        let export = crate::parse_export(reader, &selector, offset)
            .map_err(|e| StageError::input(&path, e.to_string()))?;
        ctx.reporter.set_position(size.unwrap_or(0));

        ctx.reporter.begin("write", None, "");
        let mut frame = table::to_frame(export.chat.id, &export.messages)
            .map_err(|e| StageError::Failed(format!("building the messages table: {e}")))?;
        let out = ctx.output(MESSAGES_FILE);
        table::write_parquet(&mut frame, &out)
            .map_err(|e| StageError::Failed(format!("writing {}: {e}", out.display())))?;

        let report = serde_json::json!({
            "chat": {
                "id": export.chat.id,
                "type": export.chat.kind,
                "name": export.chat.name,
            },
            "messages": export.messages.len(),
            "parse": export.stats,
        });
        let report_path = ctx.output(REPORT_FILE);
        let text = serde_json::to_string_pretty(&report).expect("a JSON value serializes");
        std::fs::write(&report_path, text)
            .map_err(|e| StageError::io(format!("writing {}", report_path.display()), e))?;

        let s = &export.stats;
        ctx.reporter.log(&format!(
            "chat {}: {} messages kept ({}), {} unsupported skipped, {} dangling replies, {} unknown fields, {} repaired escapes",
            export.chat,
            export.messages.len(),
            s.by_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", "),
            s.unsupported,
            s.dangling_replies,
            s.unknown_fields.values().sum::<u64>(),
            s.repaired_escapes,
        ));
        Ok(())
    }
}

/// Reports how far into the file the parser has read.
struct Progress<'a, R> {
    inner: R,
    read: u64,
    reporter: &'a dyn Reporter,
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        const STEP: u64 = 4 << 20;
        if (self.read + n as u64) / STEP != self.read / STEP {
            self.reporter.set_position(self.read + n as u64);
        }
        self.read += n as u64;
        Ok(n)
    }
}
