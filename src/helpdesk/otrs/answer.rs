//! The help desk's answers, as far as otnsx reads them, as serde types. The help desks differ
//! in how they write ids and numbers (a JSON number or a string, by version and back end), so
//! those arrive as a [`Scalar`]; whatever else an answer holds is ignored.

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny};
use serde_json::Value;

/// A JSON number or string, or anything else (kept as "not usable").
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Number(u64),
    Text(String),
    Other(IgnoredAny),
}

impl Scalar {
    /// A positive whole number, written either way.
    pub fn id(&self) -> Option<u64> {
        match self {
            Scalar::Number(n) => Some(*n),
            Scalar::Text(s) => s.parse().ok(),
            Scalar::Other(_) => None,
        }
    }

    /// The value as text: a string as it is, a number in digits.
    pub fn text(&self) -> Option<String> {
        match self {
            Scalar::Number(n) => Some(n.to_string()),
            Scalar::Text(s) => Some(s.clone()),
            Scalar::Other(_) => None,
        }
    }

    /// The value when it is a string.
    pub fn string(&self) -> Option<&str> {
        match self {
            Scalar::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// The operation's error, when it failed: `{"Error": {...}}` (the help desk answers HTTP 200
/// then).
#[derive(Debug, Deserialize)]
pub struct OperationError {
    #[serde(rename = "ErrorCode")]
    pub code: Option<Scalar>,
    #[serde(rename = "ErrorMessage")]
    pub message: Option<Scalar>,
}

/// SessionCreate: `{"SessionID": "..."}`.
#[derive(Debug, Deserialize)]
pub struct SessionCreate {
    #[serde(rename = "SessionID")]
    pub session_id: Option<Scalar>,
}

/// TicketGet: `{"Ticket": [{...}]}`.
#[derive(Debug, Deserialize)]
pub struct TicketGet {
    #[serde(rename = "Ticket")]
    pub tickets: Option<Vec<TicketData>>,
}

#[derive(Debug, Deserialize)]
pub struct TicketData {
    #[serde(rename = "TicketID")]
    pub id: Option<Scalar>,
    #[serde(rename = "TicketNumber")]
    pub number: Option<Scalar>,
    #[serde(rename = "Lock")]
    pub lock: Option<Scalar>,
    #[serde(rename = "Owner")]
    pub owner: Option<Scalar>,
    #[serde(rename = "OwnerID")]
    pub owner_id: Option<Scalar>,
    #[serde(rename = "Queue")]
    pub queue: Option<Scalar>,
    #[serde(rename = "Type")]
    pub kind: Option<Scalar>,
    #[serde(rename = "State")]
    pub state: Option<Scalar>,
    #[serde(rename = "Priority")]
    pub priority: Option<Scalar>,
    /// Present only when the ticket has one.
    #[serde(rename = "Service")]
    pub service: Option<Scalar>,
    /// Present only when the ticket has one.
    #[serde(rename = "SLA")]
    pub sla: Option<Scalar>,
    #[serde(rename = "CustomerID")]
    pub customer_id: Option<Scalar>,
    #[serde(rename = "Responsible")]
    pub responsible: Option<Scalar>,
    #[serde(rename = "ResponsibleID")]
    pub responsible_id: Option<Scalar>,
    /// Present with `DynamicFields=1`.
    #[serde(rename = "DynamicField")]
    pub fields: Option<Vec<Field>>,
    /// Present with `AllArticles=1`.
    #[serde(rename = "Article")]
    pub articles: Option<Vec<Article>>,
}

#[derive(Debug, Deserialize)]
pub struct Field {
    #[serde(rename = "Name")]
    pub name: Option<Scalar>,
    /// Text, a list (a multiselect field), or null.
    #[serde(rename = "Value", default)]
    pub value: Value,
}

/// Which fields an article has: they tell the help desk's generation.
#[derive(Debug, Deserialize)]
pub struct Article {
    /// Generation 6 and later.
    #[serde(rename = "IsVisibleForCustomer", default, deserialize_with = "present")]
    pub visible_for_customer: bool,
    /// Generation 6 and later.
    #[serde(
        rename = "CommunicationChannelID",
        default,
        deserialize_with = "present"
    )]
    pub channel: bool,
    /// OTRS 5.
    #[serde(rename = "ArticleType", default, deserialize_with = "present")]
    pub article_type: bool,
}

/// TicketSearch: `{"TicketID": ["2", "7"]}`, one id without the list, or `{}`.
#[derive(Debug, Deserialize)]
pub struct TicketSearch {
    #[serde(rename = "TicketID")]
    pub ids: Option<OneOrMany>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    Many(Vec<Scalar>),
    One(Scalar),
}

/// TicketHistoryGet: `{"TicketHistory": [{"History": [{...}]}]}`.
#[derive(Debug, Deserialize)]
pub struct TicketHistoryGet {
    #[serde(rename = "TicketHistory")]
    pub tickets: Option<Vec<TicketHistory>>,
}

#[derive(Debug, Deserialize)]
pub struct TicketHistory {
    #[serde(rename = "History")]
    pub history: Option<Vec<HistoryEntry>>,
}

#[derive(Debug, Deserialize)]
pub struct HistoryEntry {
    #[serde(rename = "HistoryType")]
    pub kind: Option<Scalar>,
    #[serde(rename = "CreateBy")]
    pub by: Option<Scalar>,
    #[serde(rename = "Name")]
    pub name: Option<Scalar>,
}

/// True for a field that is there, whatever its value (null included).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer).map(|_| true)
}
