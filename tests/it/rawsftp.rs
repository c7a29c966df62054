//! A protocol-level SSH/SFTP client (russh + hand-built SFTP packets) for
//! what OpenSSH's `sftp` cannot express: arbitrary path bytes, malformed
//! packets, refused requests, exact status codes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const FXP_INIT: u8 = 1;
pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_WRITE: u8 = 6;
pub const FXP_LSTAT: u8 = 7;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_SETSTAT: u8 = 9;
pub const FXP_OPENDIR: u8 = 11;
pub const FXP_READDIR: u8 = 12;
pub const FXP_REMOVE: u8 = 13;
pub const FXP_MKDIR: u8 = 14;
pub const FXP_REALPATH: u8 = 16;
pub const FXP_STAT: u8 = 17;
pub const FXP_RENAME: u8 = 18;
pub const FXP_SYMLINK: u8 = 20;
pub const FXP_EXTENDED: u8 = 200;

pub const FXP_VERSION: u8 = 2;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;
pub const FXP_EXTENDED_REPLY: u8 = 201;

pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_FAILURE: u32 = 4;

pub struct AcceptAnyHost;

impl client::Handler for AcceptAnyHost {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

pub async fn connect(port: u16) -> Handle<AcceptAnyHost> {
    let config = Arc::new(client::Config {
        inactivity_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    client::connect(config, ("127.0.0.1", port), AcceptAnyHost)
        .await
        .expect("SSH connect")
}

pub async fn auth_key(
    h: &mut Handle<AcceptAnyHost>,
    user: &str,
    key: &super::harness::ClientKey,
) -> bool {
    let k = PrivateKey::read_openssh_file(&key.private).expect("read client key");
    h.authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(k), None))
        .await
        .map(|r| r.success())
        .unwrap_or(false)
}

pub async fn auth_password(h: &mut Handle<AcceptAnyHost>, user: &str, password: &str) -> bool {
    h.authenticate_password(user, password)
        .await
        .map(|r| r.success())
        .unwrap_or(false)
}

/// An SFTP reply: type, request id and the rest of the payload.
#[derive(Debug)]
pub struct Reply {
    pub ty: u8,
    pub id: u32,
    pub body: Bytes,
}

impl Reply {
    /// (code, message) of a STATUS reply.
    pub fn status(&self) -> Option<(u32, String)> {
        if self.ty != FXP_STATUS {
            return None;
        }
        let mut b = self.body.clone();
        let code = b.get_u32();
        Some((code, get_string(&mut b)))
    }
}

pub fn get_string(b: &mut Bytes) -> String {
    let n = b.get_u32() as usize;
    String::from_utf8_lossy(&b.split_to(n)).into_owned()
}

pub fn put_string(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

pub struct Attrs {
    pub size: u64,
    pub permissions: u32,
    pub mtime: u32,
}

pub fn get_attrs(b: &mut Bytes) -> Attrs {
    let flags = b.get_u32();
    let mut a = Attrs {
        size: 0,
        permissions: 0,
        mtime: 0,
    };
    if flags & 1 != 0 {
        a.size = b.get_u64();
    }
    if flags & 2 != 0 {
        b.get_u32();
        b.get_u32();
    }
    if flags & 4 != 0 {
        a.permissions = b.get_u32();
    }
    if flags & 8 != 0 {
        b.get_u32();
        a.mtime = b.get_u32();
    }
    a
}

pub struct RawSftp {
    stream: russh::ChannelStream<client::Msg>,
    next_id: u32,
}

impl RawSftp {
    /// Opens a session channel, starts the sftp subsystem and does INIT/VERSION.
    pub async fn start(h: &Handle<AcceptAnyHost>) -> (RawSftp, Reply) {
        let ch = h
            .channel_open_session()
            .await
            .expect("open session channel");
        ch.request_subsystem(true, "sftp")
            .await
            .expect("request sftp");
        let mut s = RawSftp {
            stream: ch.into_stream(),
            next_id: 1,
        };
        let mut init = BytesMut::new();
        init.put_u8(FXP_INIT);
        init.put_u32(3);
        s.send_frame(&init).await;
        let version = s.recv().await.expect("VERSION");
        assert_eq!(version.ty, FXP_VERSION);
        (s, version)
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn send_frame(&mut self, payload: &[u8]) {
        let mut b = BytesMut::with_capacity(payload.len() + 4);
        b.put_u32(payload.len() as u32);
        b.put_slice(payload);
        self.send_raw(&b).await.expect("send");
    }

    /// The next reply; `None` when the server closed the channel.
    pub async fn recv(&mut self) -> Option<Reply> {
        let len = tokio::time::timeout(Duration::from_secs(30), self.stream.read_u32())
            .await
            .ok()?
            .ok()?;
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf).await.ok()?;
        let mut b = Bytes::from(buf);
        let ty = b.get_u8();
        let id = if ty == FXP_VERSION { 0 } else { b.get_u32() };
        Some(Reply { ty, id, body: b })
    }

    /// Sends request `ty` with `body` after a fresh id; returns the reply to it.
    pub async fn request(&mut self, ty: u8, body: impl FnOnce(&mut BytesMut)) -> Reply {
        let id = self.next_id;
        self.next_id += 1;
        let mut b = BytesMut::new();
        b.put_u8(ty);
        b.put_u32(id);
        body(&mut b);
        self.send_frame(&b).await;
        let r = self.recv().await.expect("reply");
        assert_eq!(r.id, id, "reply to another request");
        r
    }

    pub async fn path_request(&mut self, ty: u8, path: &[u8]) -> Reply {
        self.request(ty, |b| put_string(b, path)).await
    }

    pub async fn realpath(&mut self, path: &[u8]) -> Result<String, (u32, String)> {
        let r = self.path_request(FXP_REALPATH, path).await;
        if r.ty == FXP_NAME {
            let mut b = r.body.clone();
            assert_eq!(b.get_u32(), 1);
            Ok(get_string(&mut b))
        } else {
            Err(r.status().expect("status"))
        }
    }

    pub async fn stat(&mut self, path: &[u8]) -> Result<Attrs, (u32, String)> {
        let r = self.path_request(FXP_STAT, path).await;
        if r.ty == FXP_ATTRS {
            let mut b = r.body.clone();
            Ok(get_attrs(&mut b))
        } else {
            Err(r.status().expect("status"))
        }
    }

    pub async fn open(&mut self, path: &[u8], pflags: u32) -> Result<Bytes, (u32, String)> {
        let r = self
            .request(FXP_OPEN, |b| {
                put_string(b, path);
                b.put_u32(pflags);
                b.put_u32(0);
            })
            .await;
        self.handle_of(r)
    }

    pub async fn opendir(&mut self, path: &[u8]) -> Result<Bytes, (u32, String)> {
        let r = self.path_request(FXP_OPENDIR, path).await;
        self.handle_of(r)
    }

    fn handle_of(&self, r: Reply) -> Result<Bytes, (u32, String)> {
        if r.ty == FXP_HANDLE {
            let mut b = r.body.clone();
            let n = b.get_u32() as usize;
            Ok(b.split_to(n))
        } else {
            Err(r.status().expect("status"))
        }
    }

    /// Every name in a folder, via READDIR until EOF.
    pub async fn list(&mut self, path: &[u8]) -> Result<Vec<String>, (u32, String)> {
        let h = self.opendir(path).await?;
        let mut names = Vec::new();
        loop {
            let r = self.request(FXP_READDIR, |b| put_string(b, &h)).await;
            if r.ty != FXP_NAME {
                let (code, msg) = r.status().expect("status");
                assert_eq!(code, FX_EOF, "{msg}");
                break;
            }
            let mut b = r.body.clone();
            for _ in 0..b.get_u32() {
                names.push(get_string(&mut b));
                get_string(&mut b);
                get_attrs(&mut b);
            }
        }
        self.request(FXP_CLOSE, |b| put_string(b, &h)).await;
        Ok(names)
    }

    pub async fn read(
        &mut self,
        handle: &[u8],
        offset: u64,
        len: u32,
    ) -> Result<Bytes, (u32, String)> {
        let r = self
            .request(FXP_READ, |b| {
                put_string(b, handle);
                b.put_u64(offset);
                b.put_u32(len);
            })
            .await;
        if r.ty == FXP_DATA {
            let mut b = r.body.clone();
            let n = b.get_u32() as usize;
            Ok(b.split_to(n))
        } else {
            Err(r.status().expect("status"))
        }
    }
}
