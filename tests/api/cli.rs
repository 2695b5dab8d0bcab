//! `rovertchat user ...`: the real binary against the test server's database, with the password
//! on standard input or typed at a terminal (a pseudo-terminal).

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rovertchat::config::DatabaseConfig;

use crate::on_both_databases;
use crate::support::process::{rovertchat, PROCESS_WAIT};
use crate::support::{Backend, TestApp, PASSWORD};

on_both_databases!(
    accounts_are_managed_from_the_command_line_with_audit_events,
    the_command_line_refuses_what_the_api_refuses_without_showing_passwords,
    passwords_typed_at_a_terminal_are_not_shown,
);

/// The server's database and a working directory for the command.
struct Shell {
    dir: tempfile::TempDir,
    database_url: String,
}

impl Shell {
    fn for_app(app: &TestApp) -> Shell {
        let database_url = match &app.database {
            DatabaseConfig::Postgres { url } => url.expose().to_owned(),
            DatabaseConfig::Sqlite { path } => format!("sqlite:{}", path.display()),
        };
        Shell { dir: tempfile::tempdir().unwrap(), database_url }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = rovertchat(self.dir.path());
        command.env("DATABASE_URL", &self.database_url).env("NO_COLOR", "1").args(args);
        command
    }

    /// Runs `rovertchat <args>` with `stdin` as its standard input.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs it and asserts success; its standard output.
    #[track_caller]
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(output.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        stdout
    }

    /// Runs it and asserts it failed with exit code 1; its standard output and error together.
    #[track_caller]
    fn refused(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run(args, stdin);
        let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(1), "{args:?}: {all}");
        all
    }
}

/// The actions recorded with the actor `cli`, oldest first.
async fn cli_events(app: &TestApp) -> Vec<String> {
    let filter = rovertchat::store::audit::AuditFilter { limit: 1000, ..Default::default() };
    let (events, _) = app.store.audit_events(&filter).await.unwrap();
    let cli: Vec<_> = events.into_iter().filter(|e| e.actor_kind == "cli").collect();
    assert!(cli.iter().all(|e| e.actor_user_id.is_none() && e.client_address.is_none()), "{cli:?}");
    cli.into_iter().rev().map(|e| e.action).collect()
}

async fn accounts_are_managed_from_the_command_line_with_audit_events(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("USER_CACHE_SECS", "0".into())]).await;
    let shell = Shell::for_app(&app);

    let created = shell.ok(
        &["user", "create", "--username", "root_admin", "--email", "root@example.com", "--role", "admin"],
        "Root-pass-2026!\n",
    );
    assert!(created.contains("created root_admin ("), "{created}");
    assert!(created.contains("with the role admin"), "{created}");
    // The admin made on the command line logs in through the API.
    let root = app.login("root_admin", "Root-pass-2026!").await;
    let me = app.get("/users/me").session(&root).send().await;
    assert_eq!((me.body["role"].as_str(), me.body["is_active"].as_bool()), (Some("admin"), Some(true)));

    shell.ok(&["user", "create", "--username", "bob_user", "--email", "bob@example.com"], &format!("{PASSWORD}\n"));
    let bob = app.login("bob_user", PASSWORD).await;
    assert_eq!(app.get("/users/me").session(&bob).send().await.body["role"], "user");

    let listed = shell.ok(&["user", "list"], "");
    let lines: Vec<&str> = listed.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("USERNAME") && lines[0].contains("LAST LOGIN"), "{listed}");
    assert!(lines[1].contains("root_admin") && lines[1].contains("root@example.com") && lines[1].contains("admin"), "{listed}");
    assert!(lines[2].contains("bob_user") && lines[2].contains(" user ") && lines[2].contains("yes"), "{listed}");
    assert_eq!(lines.len(), 3, "{listed}");

    let reset = shell.ok(&["user", "reset-password", "bob@example.com"], "Bob-new-pass-2026\n");
    assert!(reset.contains("password of bob_user changed"), "{reset}");
    assert_eq!(app.get("/users/me").session(&bob).send().await.status, 401, "every session of the account ended");
    assert_eq!(app.post("/auth/login").form(&[("username", "bob_user"), ("password", PASSWORD)]).send().await.status, 401);
    let bob = app.login("bob_user", "Bob-new-pass-2026").await;

    let bob_id = app.get("/users/me").session(&bob).send().await.body["id"].as_str().unwrap().to_owned();
    assert!(shell.ok(&["user", "set-role", &bob_id, "admin"], "").contains("bob_user is now admin"));
    assert_eq!(app.get("/users").session(&bob).send().await.status, 200, "bob is an admin now");
    assert!(shell.ok(&["user", "deactivate", "bob_user"], "").contains("bob_user deactivated"));
    app.post("/auth/login")
        .form(&[("username", "bob_user"), ("password", "Bob-new-pass-2026")])
        .send()
        .await
        .assert_detail(400, "Inactive user");
    assert!(shell.ok(&["user", "activate", "bob_user"], "").contains("bob_user activated"));
    app.login("bob_user", "Bob-new-pass-2026").await;

    assert_eq!(
        cli_events(&app).await,
        ["auth.register", "auth.register", "user.password_changed", "user.role_changed", "user.deactivated", "user.activated"]
    );
}

async fn the_command_line_refuses_what_the_api_refuses_without_showing_passwords(backend: Backend) {
    let app = TestApp::spawn_with(backend, vec![("USER_CACHE_SECS", "0".into())]).await;
    let shell = Shell::for_app(&app);
    shell.ok(
        &["user", "create", "--username", "root_admin", "--email", "root@example.com", "--role", "admin"],
        "Root-pass-2026!\n",
    );
    let events = app.count("SELECT COUNT(*) FROM audit_events").await;

    // The last active admin stays: the refused change and its event are rolled back.
    let demoted = shell.refused(&["user", "set-role", "root_admin", "user"], "");
    assert!(demoted.contains("The last active admin cannot be deactivated or demoted"), "{demoted}");
    let deactivated = shell.refused(&["user", "deactivate", "root_admin"], "");
    assert!(deactivated.contains("The last active admin cannot be deactivated or demoted"), "{deactivated}");

    let short = shell.refused(&["user", "create", "--username", "carol_guest", "--email", "carol@example.com"], "Tiny-7\n");
    assert!(short.contains("password: String should have at least 8 characters"), "{short}");
    assert!(!short.contains("Tiny-7"), "the password is shown: {short}");
    let long_password = format!("{}\n", "Long-pass-".repeat(11));
    let long = shell.refused(&["user", "reset-password", "root_admin"], &long_password);
    assert!(long.contains("password: String should have at most 100 characters"), "{long}");
    assert!(!long.contains("Long-pass-Long"), "the password is shown: {long}");

    let taken =
        shell.refused(&["user", "create", "--username", "ROOT_admin", "--email", "other@example.com"], &format!("{PASSWORD}\n"));
    assert!(taken.contains("Username already registered"), "{taken}");
    let bad_name = shell.refused(&["user", "create", "--username", "a@b", "--email", "ab@example.com"], &format!("{PASSWORD}\n"));
    assert!(bad_name.contains("username: "), "{bad_name}");
    let bad_email = shell.refused(&["user", "create", "--username", "dave_user", "--email", "nope"], &format!("{PASSWORD}\n"));
    assert!(bad_email.contains("email: value is not a valid email address"), "{bad_email}");
    let nobody = shell.refused(&["user", "activate", "nobody_here"], "");
    assert!(nobody.contains("no account has the name or id \"nobody_here\""), "{nobody}");

    let bad_role = shell.run(&["user", "set-role", "root_admin", "owner"], "");
    assert_eq!(bad_role.status.code(), Some(2), "clap refuses an unknown role");
    let as_argument =
        shell.run(&["user", "create", "--username", "eve_user", "--email", "eve@example.com", "--password", PASSWORD], "");
    assert_eq!(as_argument.status.code(), Some(2), "a password is never an argument");

    assert_eq!(app.count("SELECT COUNT(*) FROM audit_events").await, events, "nothing refused was recorded");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1);
    let me = app.login("root_admin", "Root-pass-2026!").await;
    assert_eq!(app.get("/users/me").session(&me).send().await.body["role"], "admin");
}

/// A pseudo-terminal whose other end is the command's controlling terminal, standard input,
/// output and error; what the command writes to it is collected.
struct Terminal {
    master: std::fs::File,
    output: Arc<Mutex<String>>,
}

impl Terminal {
    fn run(shell: &Shell, args: &[&str]) -> (Terminal, std::process::Child) {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes the two descriptors it opens; the other arguments may be null.
        let opened = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
        assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (master, slave) = unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut command = shell.command(args);
        command
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe, as code between fork and exec must be.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        // The command's copies of the terminal's end are the only ones left open.
        drop(command);
        let output = Arc::new(Mutex::new(String::new()));
        let (mut reader, collected) = (master.try_clone().unwrap(), output.clone());
        std::thread::spawn(move || {
            let mut chunk = [0u8; 1024];
            // Ends with an error (EIO) once the command has closed its end.
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                collected.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        (Terminal { master, output }, child)
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn echoes(&self) -> bool {
        // SAFETY: termios is plain data; tcgetattr fills it for the terminal of a valid descriptor.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let read = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut termios) };
        read != 0 || termios.c_lflag & libc::ECHO != 0
    }

    /// Waits for the `nth` password prompt and for echo to be off, then types `line`.
    fn type_at_prompt(&mut self, nth: usize, line: &str) {
        let deadline = Instant::now() + PROCESS_WAIT;
        while self.output().matches("assword: ").count() < nth || self.echoes() {
            assert!(Instant::now() < deadline, "no prompt {nth} with echo off; output: {:?}", self.output());
            std::thread::sleep(Duration::from_millis(10));
        }
        self.master.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
}

fn wait(mut child: std::process::Child) -> Option<i32> {
    let deadline = Instant::now() + PROCESS_WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(Instant::now() < deadline, "the command did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The whole output once the command has closed the terminal.
fn final_output(terminal: &Terminal) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Arc::strong_count(&terminal.output) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    terminal.output()
}

async fn passwords_typed_at_a_terminal_are_not_shown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let shell = Shell::for_app(&app);
    let create = ["user", "create", "--username", "root_admin", "--email", "root@example.com", "--role", "admin"];

    let (mut terminal, child) = Terminal::run(&shell, &create);
    terminal.type_at_prompt(1, "First-pass-2026!");
    terminal.type_at_prompt(2, "Other-pass-2026!");
    assert_eq!(wait(child), Some(1));
    let output = final_output(&terminal);
    assert!(output.contains("Password: ") && output.contains("Repeat password: "), "{output:?}");
    assert!(output.contains("the passwords do not match"), "{output:?}");
    assert!(!output.contains("First-pass") && !output.contains("Other-pass"), "a password is shown: {output:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);

    let (mut terminal, child) = Terminal::run(&shell, &create);
    terminal.type_at_prompt(1, "Root-pass-2026!");
    terminal.type_at_prompt(2, "Root-pass-2026!");
    assert_eq!(wait(child), Some(0), "{:?}", final_output(&terminal));
    let output = final_output(&terminal);
    assert!(output.contains("created root_admin"), "{output:?}");
    assert!(!output.contains("Root-pass"), "the password is shown: {output:?}");
    app.login("root_admin", "Root-pass-2026!").await;
}
