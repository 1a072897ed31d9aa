//! Model configurations: the eight official configs (`sam2/configs/sam2{,.1}/*.yaml`)
//! expressed as data, plus the image size (1024 for the official models; tests use
//! smaller sizes where they are about logic).

pub use sam2_api::model::{ModelSize, ModelVersion};

/// Hiera trunk hyper-parameters (`backbones/hieradet.py`).
#[derive(Clone, Debug, PartialEq)]
pub struct HieraConfig {
    pub embed_dim: i64,
    pub num_heads: i64,
    pub stages: [usize; 4],
    pub global_att_blocks: Vec<usize>,
    pub window_pos_embed_bkg_spatial_size: [i64; 2],
    pub window_spec: [i64; 4],
}

impl HieraConfig {
    pub fn backbone_channel_list(&self) -> [i64; 4] {
        let e = self.embed_dim;
        [8 * e, 4 * e, 2 * e, e]
    }
}

/// The model input sizes the network accepts: the Hiera trunk halves the 4-pixel patch
/// grid three times and the mask decoder upsamples by 4 from there, so the side must be a
/// multiple of 64; below 128 the last stage has no window left, above 4096 the image
/// encoder alone needs tens of GB.
pub fn check_image_size(image_size: i64) -> Result<(), String> {
    if image_size % 64 != 0 || !(128..=4096).contains(&image_size) {
        return Err(format!(
            "image size {image_size}: must be a multiple of 64 in 128..=4096 (1024 for the official models)"
        ));
    }
    Ok(())
}

/// `--image-size` as clap parses it: refused at argument parsing (exit 2), never a panic
/// in the worker.
pub fn parse_image_size(s: &str) -> Result<i64, String> {
    let v: i64 = s.trim().parse().map_err(|_| format!("'{s}': not a whole number"))?;
    check_image_size(v)?;
    Ok(v)
}

/// Everything that differs between the eight official models.
#[derive(Clone, Debug, PartialEq)]
pub struct Sam2Config {
    pub size: ModelSize,
    pub version: ModelVersion,
    pub image_size: i64,
    pub hiera: HieraConfig,
}

impl Sam2Config {
    pub fn new(size: ModelSize, version: ModelVersion) -> Self {
        let hiera = match size {
            ModelSize::Tiny => HieraConfig {
                embed_dim: 96,
                num_heads: 1,
                stages: [1, 2, 7, 2],
                global_att_blocks: vec![5, 7, 9],
                window_pos_embed_bkg_spatial_size: [7, 7],
                window_spec: [8, 4, 14, 7],
            },
            ModelSize::Small => HieraConfig {
                embed_dim: 96,
                num_heads: 1,
                stages: [1, 2, 11, 2],
                global_att_blocks: vec![7, 10, 13],
                window_pos_embed_bkg_spatial_size: [7, 7],
                window_spec: [8, 4, 14, 7],
            },
            ModelSize::BasePlus => HieraConfig {
                embed_dim: 112,
                num_heads: 2,
                stages: [2, 3, 16, 3],
                global_att_blocks: vec![12, 16, 20],
                window_pos_embed_bkg_spatial_size: [14, 14],
                window_spec: [8, 4, 14, 7],
            },
            ModelSize::Large => HieraConfig {
                embed_dim: 144,
                num_heads: 2,
                stages: [2, 6, 36, 4],
                global_att_blocks: vec![23, 33, 43],
                window_pos_embed_bkg_spatial_size: [7, 7],
                window_spec: [8, 4, 16, 8],
            },
        };
        Sam2Config { size, version, image_size: 1024, hiera }
    }

    /// Panics on a size `check_image_size` refuses: callers check user input first.
    pub fn with_image_size(mut self, image_size: i64) -> Self {
        if let Err(e) = check_image_size(image_size) {
            panic!("{e}");
        }
        self.image_size = image_size;
        self
    }

    pub fn is_v2_1(&self) -> bool {
        self.version == ModelVersion::V2_1
    }

    /// The official checkpoint file name, e.g. `sam2.1_hiera_tiny.pt`.
    pub fn checkpoint_file_name(&self) -> String {
        sam2_api::catalog::file_name(self.size, self.version)
    }

    /// The official config name, e.g. `configs/sam2.1/sam2.1_hiera_t.yaml`.
    pub fn reference_config(&self) -> String {
        let (dir, prefix) = if self.is_v2_1() { ("sam2.1", "sam2.1") } else { ("sam2", "sam2") };
        format!("configs/{dir}/{prefix}_hiera_{}.yaml", self.size.letter())
    }

    pub fn label(&self) -> String {
        format!("SAM {} {}", self.version, self.size)
    }
}
