use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::settings::{SettingsChanges, UserSettings};
use crate::validation::{object, uuid_v4, BodySize, Fields, FromFields, Patch, Text};

/// The columns are `VARCHAR(100)` and `VARCHAR(255)`.
pub type DisplayName = Text<0, 100>;
pub type AvatarUrl = Text<0, 255>;

/// `PUT /user-settings/...`: a partial update; `null` clears a field, `preferences` is replaced whole.
#[derive(ToSchema)]
pub struct SettingsUpdate {
    /// A UUID version 4, or `null` to clear.
    #[schema(value_type = Option<Uuid>)]
    pub default_model_id: Patch<Uuid>,
    #[schema(inline, value_type = Option<DisplayName>)]
    pub display_name: Patch<String>,
    #[schema(inline, value_type = Option<AvatarUrl>)]
    pub avatar_url: Patch<String>,
    /// Replaced whole (not merged).
    #[schema(value_type = Option<Object>)]
    pub preferences: Patch<Map<String, Value>>,
}

impl FromFields for SettingsUpdate {
    const BODY_SIZE: BodySize = BodySize::Medium;

    fn from_fields(f: &mut Fields<'_>) -> Option<Self> {
        Some(SettingsUpdate {
            default_model_id: f.patch("default_model_id", uuid_v4),
            display_name: f.patch("display_name", |v| DisplayName::parse(v).map(Text::into_string)),
            avatar_url: f.patch("avatar_url", |v| AvatarUrl::parse(v).map(Text::into_string)),
            preferences: f.patch("preferences", object),
        })
    }
}

impl From<SettingsUpdate> for SettingsChanges {
    fn from(update: SettingsUpdate) -> Self {
        SettingsChanges {
            default_model_id: update.default_model_id.into_update(),
            display_name: update.display_name.into_update(),
            avatar_url: update.avatar_url.into_update(),
            preferences: update.preferences.into_update().map(|p| p.map(Value::Object)),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsResponse {
    pub default_model_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub avatar_url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub preferences: Option<Value>,
    pub user_id: Uuid,
}

impl From<UserSettings> for SettingsResponse {
    fn from(s: UserSettings) -> Self {
        SettingsResponse {
            default_model_id: s.default_model_id,
            display_name: s.display_name,
            avatar_url: s.avatar_url,
            // A JSON `null` stored by hand reads the same as SQL NULL.
            preferences: s.preferences.filter(|p| !p.is_null()),
            user_id: s.user_id,
        }
    }
}
