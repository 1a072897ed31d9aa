//! The official backend's GraphQL schema (Strawberry, `demo/backend/server/data/`) in
//! async-graphql: the same type, field and argument names (camelCase), the same
//! nullability, so the front end's Relay documents run unchanged.
use crate::data::VideoEntry;
use crate::sessions::FrameResult;
use crate::AppState;
use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{
    Context, EmptySubscription, Error, InputObject, Interface, Object, Result, Scalar, ScalarType, Schema,
    SimpleObject, Upload, Value,
};
use base64::Engine as _;
use std::sync::Arc;

pub type DemoSchema = Schema<Query, Mutation, EmptySubscription>;

pub fn build(state: Arc<AppState>) -> DemoSchema {
    Schema::build(Query, Mutation, EmptySubscription).data(state).finish()
}

fn state<'a>(ctx: &Context<'a>) -> &'a Arc<AppState> {
    ctx.data_unchecked::<Arc<AppState>>()
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Strawberry's relay `GlobalID`: `base64("<Type>:<id>")`, a string on the wire.
#[derive(Clone, Debug)]
pub struct GlobalId(pub String);

#[Scalar(name = "GlobalID")]
impl ScalarType for GlobalId {
    fn parse(value: Value) -> async_graphql::InputValueResult<Self> {
        match value {
            Value::String(s) => Ok(GlobalId(s)),
            other => Err(async_graphql::InputValueError::expected_type(other)),
        }
    }
    fn to_value(&self) -> Value {
        Value::String(self.0.clone())
    }
}

#[derive(Interface)]
#[graphql(field(name = "id", ty = "&GlobalId"))]
pub enum Node {
    Video(Video),
}

pub struct Video(pub VideoEntry, pub GlobalId, pub String);

impl Video {
    fn new(v: VideoEntry, api_url: &str) -> Video {
        let id = GlobalId(b64(&format!("Video:{}", v.code)));
        Video(v, id, api_url.trim_end_matches('/').to_string())
    }
}

#[Object]
impl Video {
    async fn id(&self) -> &GlobalId {
        &self.1
    }
    async fn path(&self) -> &str {
        &self.0.path
    }
    async fn poster_path(&self) -> Option<&str> {
        self.0.poster_path.as_deref()
    }
    async fn width(&self) -> i32 {
        self.0.width
    }
    async fn height(&self) -> i32 {
        self.0.height
    }
    async fn url(&self) -> String {
        format!("{}/{}", self.2, self.0.path)
    }
    /// As the official, also without a poster (`…/None`, Python's `str(None)`).
    async fn poster_url(&self) -> String {
        format!("{}/{}", self.2, self.0.poster_path.as_deref().unwrap_or("None"))
    }
}

#[derive(SimpleObject)]
#[graphql(name = "RLEMask")]
pub struct RleMask {
    size: Vec<i32>,
    counts: String,
    order: String,
}

#[derive(SimpleObject)]
#[graphql(name = "RLEMaskForObject")]
pub struct RleMaskForObject {
    object_id: i32,
    rle_mask: RleMask,
}

#[derive(SimpleObject)]
#[graphql(name = "RLEMaskListOnFrame")]
pub struct RleMaskListOnFrame {
    frame_index: i32,
    rle_mask_list: Vec<RleMaskForObject>,
}

impl From<FrameResult> for RleMaskListOnFrame {
    fn from(r: FrameResult) -> Self {
        RleMaskListOnFrame {
            frame_index: r.frame as i32,
            rle_mask_list: r
                .objects
                .into_iter()
                .map(|(object_id, rle)| RleMaskForObject {
                    object_id,
                    rle_mask: RleMask {
                        size: vec![rle.size[0] as i32, rle.size[1] as i32],
                        counts: rle.counts,
                        order: "F".into(),
                    },
                })
                .collect(),
        }
    }
}

#[derive(InputObject)]
pub struct StartSessionInput {
    path: String,
}

#[derive(SimpleObject)]
pub struct StartSession {
    session_id: String,
}

#[derive(InputObject)]
pub struct CloseSessionInput {
    session_id: String,
}

#[derive(SimpleObject)]
pub struct CloseSession {
    success: bool,
}

#[derive(InputObject)]
pub struct AddPointsInput {
    session_id: String,
    frame_index: i32,
    clear_old_points: bool,
    object_id: i32,
    labels: Vec<i32>,
    points: Vec<Vec<f64>>,
}

#[derive(InputObject)]
pub struct ClearPointsInFrameInput {
    session_id: String,
    frame_index: i32,
    object_id: i32,
}

#[derive(InputObject)]
pub struct ClearPointsInVideoInput {
    session_id: String,
}

#[derive(SimpleObject)]
pub struct ClearPointsInVideo {
    success: bool,
}

#[derive(InputObject)]
pub struct RemoveObjectInput {
    session_id: String,
    object_id: i32,
}

#[derive(InputObject)]
pub struct CancelPropagateInVideoInput {
    session_id: String,
}

#[derive(SimpleObject)]
pub struct CancelPropagateInVideo {
    success: bool,
}

pub struct Query;

#[Object]
impl Query {
    /// The gallery video named by the default path, else the first one.
    async fn default_video(&self, ctx: &Context<'_>) -> Result<Video> {
        let app = state(ctx);
        let pick = app
            .opts
            .default_video
            .as_ref()
            .and_then(|d| app.gallery.iter().find(|v| &v.path == d))
            .or_else(|| app.gallery.first())
            .ok_or_else(|| Error::new("the gallery is empty: put .mp4 videos in the data folder's gallery/"))?;
        Ok(Video::new(pick.clone(), &app.opts.api_url))
    }

    /// Every gallery video (uploads are not listed, as in the official).
    async fn videos(
        &self,
        ctx: &Context<'_>,
        before: Option<String>,
        after: Option<String>,
        first: Option<i32>,
        last: Option<i32>,
    ) -> Result<Connection<String, Video, EmptyFields, EmptyFields>> {
        let app = state(ctx);
        let all = &app.gallery;
        let index_of = |c: &Option<String>| -> Result<Option<usize>> {
            let Some(c) = c else { return Ok(None) };
            let text = base64::engine::general_purpose::STANDARD
                .decode(c)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            text.strip_prefix("arrayconnection:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(Some)
                .ok_or_else(|| Error::new(format!("invalid cursor {c:?}")))
        };
        let mut start = index_of(&after)?.map(|a| a + 1).unwrap_or(0);
        let mut end = index_of(&before)?.unwrap_or(all.len()).min(all.len());
        if let Some(f) = first {
            if f < 0 {
                return Err(Error::new("Argument 'first' must be a non-negative integer."));
            }
            end = end.min(start + f as usize);
        }
        if let Some(l) = last {
            if l < 0 {
                return Err(Error::new("Argument 'last' must be a non-negative integer."));
            }
            start = start.max(end.saturating_sub(l as usize));
        }
        let start = start.min(end);
        let mut c = Connection::new(start > 0, end < all.len());
        for (i, v) in all.iter().enumerate().take(end).skip(start) {
            c.edges.push(Edge::new(b64(&format!("arrayconnection:{i}")), Video::new(v.clone(), &app.opts.api_url)));
        }
        Ok(c)
    }
}

fn session(ctx: &Context<'_>, id: &str) -> Result<Arc<crate::sessions::Session>> {
    state(ctx).sessions.get(id).map_err(Error::new)
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Transcodes an upload as the official does; refused: no video, too long, too large.
    async fn upload_video(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        start_time_sec: Option<f64>,
        duration_time_sec: Option<f64>,
    ) -> Result<Video> {
        let app = state(ctx);
        let value = file.value(ctx).map_err(|e| Error::new(format!("cannot read the upload: {e}")))?;
        let limits = crate::upload::UploadLimits {
            max_bytes: app.opts.max_upload_bytes,
            max_seconds: app.opts.max_upload_seconds,
            max_input_seconds: app.opts.max_upload_input_seconds,
        };
        let v = crate::upload::process(
            &app.data,
            &app.opts.ffmpeg,
            &app.opts.ffprobe,
            &limits,
            value.content,
            start_time_sec,
            duration_time_sec,
        )
        .await
        .map_err(|e| Error::new(format!("upload refused: {e}")))?;
        app.board.info(format!("upload stored as {} ({}x{})", v.path, v.width, v.height));
        Ok(Video::new(v, &app.opts.api_url))
    }

    /// Starts a session (its own engine worker) on a video of the data folder.
    async fn start_session(&self, ctx: &Context<'_>, input: StartSessionInput) -> Result<StartSession> {
        let app = state(ctx);
        let media =
            app.data.resolve("", &input.path).map_err(|e| Error::new(format!("cannot start a session: {e}")))?;
        let session_id = app.sessions.start(media, &input.path).await.map_err(Error::new)?;
        Ok(StartSession { session_id })
    }

    /// Stops the session's worker; `success: false` for an unknown session.
    async fn close_session(&self, ctx: &Context<'_>, input: CloseSessionInput) -> Result<CloseSession> {
        let success = state(ctx).sessions.close(&input.session_id, "closeSession");
        Ok(CloseSession { success })
    }

    async fn add_points(&self, ctx: &Context<'_>, input: AddPointsInput) -> Result<RleMaskListOnFrame> {
        let s = session(ctx, &input.session_id)?;
        let r = s
            .add_points(input.frame_index, input.object_id, &input.points, &input.labels, input.clear_old_points)
            .await
            .map_err(Error::new)?;
        Ok(r.into())
    }

    async fn remove_object(&self, ctx: &Context<'_>, input: RemoveObjectInput) -> Result<Vec<RleMaskListOnFrame>> {
        let s = session(ctx, &input.session_id)?;
        let frames = s.remove_object(input.object_id).await.map_err(Error::new)?;
        Ok(frames.into_iter().map(Into::into).collect())
    }

    async fn clear_points_in_frame(
        &self,
        ctx: &Context<'_>,
        input: ClearPointsInFrameInput,
    ) -> Result<RleMaskListOnFrame> {
        let s = session(ctx, &input.session_id)?;
        let r = s.clear_points_in_frame(input.frame_index, input.object_id).await.map_err(Error::new)?;
        Ok(r.into())
    }

    async fn clear_points_in_video(
        &self,
        ctx: &Context<'_>,
        input: ClearPointsInVideoInput,
    ) -> Result<ClearPointsInVideo> {
        let s = session(ctx, &input.session_id)?;
        s.clear_points_in_video().await.map_err(Error::new)?;
        Ok(ClearPointsInVideo { success: true })
    }

    async fn cancel_propagate_in_video(
        &self,
        ctx: &Context<'_>,
        input: CancelPropagateInVideoInput,
    ) -> Result<CancelPropagateInVideo> {
        let s = session(ctx, &input.session_id)?;
        s.cancel_propagation();
        Ok(CancelPropagateInVideo { success: true })
    }
}
