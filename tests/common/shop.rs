//! The "shop" Compose project the build-on-deploy tests deploy: two services built
//! from their own contexts (db with a build argument, api copying a file), a
//! `depends_on` chain with `service_healthy`, `volumes_from`, a profile. Each test adds
//! its own override file.

use std::path::Path;

pub const COMPOSE: &str = r#"
name: shop
services:
  db:
    build:
      context: ./db
      args:
        GREETING: hello-from-build
    # Healthy only once it has written the shared file, 2 s after starting.
    command: ["sh", "-c", "sleep 2; cat /greeting > /shared/ready; touch /tmp/healthy; exec sleep 600"]
    volumes:
      - shared:/shared
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/healthy"]
      interval: 1s
      timeout: 1s
      retries: 30
    stop_grace_period: 1s
  api:
    build: ./api
    depends_on:
      db:
        condition: service_healthy
    volumes_from:
      - db:ro
    # Reads the file at once: it is there only if db was healthy before api started.
    command: ["sh", "-c", "cat /shared/ready /msg; exec sleep 600"]
    stop_grace_period: 1s
  web:
    image: busybox:latest
    depends_on: [api]
    command: ["sleep", "600"]
    stop_grace_period: 1s
  debug:
    image: busybox:latest
    profiles: [debug]
    command: ["sleep", "600"]
volumes:
  shared: {}
"#;

/// Writes `text` at `dir/name` (making directories); returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::write(&p, text).expect("write");
    p.to_string_lossy().into_owned()
}

/// Writes the project under `dir`: the Compose file and both build contexts. Returns
/// the Compose file's path.
pub fn write_project(dir: &Path) -> String {
    write(
        dir,
        "db/Dockerfile",
        "FROM busybox:latest\nARG GREETING\nRUN echo \"$GREETING\" > /greeting\n",
    );
    write(
        dir,
        "api/Dockerfile",
        "FROM busybox:latest\nCOPY msg /msg\n",
    );
    write(dir, "api/msg", "api-message\n");
    write(dir, "compose.yaml", COMPOSE)
}
