-- The schema exactly as the original Python backend creates it (SQLAlchemy create_all).
-- A database made by the original is adopted by recording this migration as applied
-- (see src/store/adopt.rs), so this file must never change.
CREATE TYPE user_role_enum AS ENUM ('guest', 'user', 'admin');

CREATE TABLE users (
    id uuid NOT NULL,
    username character varying(100) NOT NULL,
    email character varying(255) NOT NULL,
    password_hash character varying(255) NOT NULL,
    role user_role_enum,
    created_at timestamp without time zone,
    last_login timestamp without time zone,
    is_active boolean,
    token_version integer NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_email_key UNIQUE (email)
);

CREATE TABLE user_settings (
    user_id uuid NOT NULL,
    default_model_id uuid,
    display_name character varying(100),
    avatar_url character varying(255),
    preferences json,
    CONSTRAINT user_settings_pkey PRIMARY KEY (user_id),
    CONSTRAINT user_settings_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id)
);

CREATE TABLE chats (
    id uuid NOT NULL,
    user_id uuid,
    title character varying(255),
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    is_archived boolean,
    CONSTRAINT chats_pkey PRIMARY KEY (id),
    CONSTRAINT chats_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id)
);

CREATE TABLE model_providers (
    id uuid NOT NULL,
    name character varying(100) NOT NULL,
    api_url character varying(255) NOT NULL,
    auth_type character varying(50),
    created_by uuid,
    created_at timestamp without time zone,
    is_active boolean,
    CONSTRAINT model_providers_pkey PRIMARY KEY (id),
    CONSTRAINT model_providers_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id)
);

CREATE TABLE models (
    id uuid NOT NULL,
    provider_id uuid,
    name character varying(100) NOT NULL,
    display_name character varying(100),
    description text,
    config json,
    created_at timestamp without time zone,
    updated_at timestamp without time zone,
    is_active boolean,
    CONSTRAINT models_pkey PRIMARY KEY (id),
    CONSTRAINT models_provider_id_fkey FOREIGN KEY (provider_id) REFERENCES model_providers(id)
);

CREATE TABLE messages (
    id uuid NOT NULL,
    chat_id uuid,
    role character varying(50) NOT NULL,
    content text NOT NULL,
    thinking text,
    tool_calls json,
    images json,
    model_id uuid,
    created_at timestamp without time zone,
    tokens_used integer,
    extended_metadata json,
    CONSTRAINT messages_pkey PRIMARY KEY (id),
    CONSTRAINT messages_chat_id_fkey FOREIGN KEY (chat_id) REFERENCES chats(id),
    CONSTRAINT messages_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id)
);

CREATE TABLE user_model_access (
    id uuid NOT NULL,
    user_id uuid,
    model_id uuid,
    granted_by uuid,
    granted_at timestamp without time zone,
    is_active boolean,
    CONSTRAINT user_model_access_pkey PRIMARY KEY (id),
    CONSTRAINT user_model_access_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id),
    CONSTRAINT user_model_access_model_id_fkey FOREIGN KEY (model_id) REFERENCES models(id),
    CONSTRAINT user_model_access_granted_by_fkey FOREIGN KEY (granted_by) REFERENCES users(id)
);
