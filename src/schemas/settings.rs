use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::settings::{SettingsChanges, UserSettings};
use crate::validation::{object, string, uuid_v4, BodySize, Fields, FromFields, Patch};

/// `PUT /user-settings/...`: a partial update; `null` clears a field, `preferences` is replaced whole.
#[derive(ToSchema)]
pub struct SettingsUpdate {
    /// A UUID version 4, or `null` to clear.
    #[schema(value_type = Option<Uuid>)]
    pub default_model_id: Patch<Uuid>,
    #[schema(value_type = Option<String>, max_length = 100)]
    pub display_name: Patch<String>,
    #[schema(value_type = Option<String>, max_length = 255)]
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
            display_name: f.patch("display_name", string(0, 100)),
            avatar_url: f.patch("avatar_url", string(0, 255)),
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
