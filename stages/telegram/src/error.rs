use std::fmt;

use crate::export::ChatInfo;

/// Why an export could not be read. Each message says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(
        "the file is empty; export the chat again from Telegram Desktop as \"Machine-readable JSON\""
    )]
    Empty,
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "line {line}, column {column}: the file ends in the middle of the JSON ({message}); it is truncated: export it again"
    )]
    Truncated {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("reading failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("no `messages` array and no `chats` list: this is not a Telegram Desktop JSON export")]
    NotAnExport,
    #[error("no chat {wanted} in this export; set `chat_id` to one of: {}", ChatList(.chats))]
    ChatNotFound {
        wanted: String,
        chats: Vec<ChatInfo>,
    },
    #[error("{count} chats are named {name:?}; set `chat_id` instead, one of: {}", ChatList(.chats))]
    AmbiguousName {
        name: String,
        count: usize,
        chats: Vec<ChatInfo>,
    },
    #[error("this account export holds {} chats; choose one with `chat_id` (or a unique `chat` name): {}", .chats.len(), ChatList(.chats))]
    ChooseChat { chats: Vec<ChatInfo> },
}

impl ExportError {
    pub(crate) fn from_json(err: serde_json::Error) -> Self {
        if let Some(io) = err.io_error_kind() {
            return ExportError::Io(std::io::Error::new(io, err.to_string()));
        }
        let full = err.to_string();
        let message = match full.rsplit_once(" at line ") {
            Some((message, _)) => message.to_owned(),
            None => full,
        };
        let (line, column) = (err.line(), err.column());
        if err.is_eof() {
            if line == 1 && column == 0 {
                return ExportError::Empty;
            }
            return ExportError::Truncated {
                line,
                column,
                message,
            };
        }
        ExportError::Syntax {
            line,
            column,
            message,
        }
    }
}

struct ChatList<'a>(&'a [ChatInfo]);

impl fmt::Display for ChatList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        const SHOWN: usize = 20;
        for (i, chat) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{chat}")?;
        }
        if self.0.len() > SHOWN {
            write!(f, ", … ({} more)", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}
