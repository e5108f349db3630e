//! The live canvas, the studio's only wgpu user. Each new frame is written into a wgpu
//! texture (one per size, reused) and drawn by shaders/canvas.wgsl inside egui's render
//! pass: nearest-neighbour pixels when zoomed in, filtered when zoomed out, zoom and pan,
//! fit to window, a checkerboard around the image and a before/after split against the
//! init image. Without a wgpu renderer (tests), an egui texture shows the same frame.

use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eframe::egui_wgpu::{self, wgpu};
use egui::{Rect, Sense, Vec2};

use crate::worker::Frame;
use crate::worker::FrameEvent;

/// The uniform block of shaders/canvas.wgsl (64 bytes, WGSL layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ViewUniform {
    rect_min: [f32; 2],
    rect_max: [f32; 2],
    widget_size: [f32; 2],
    image_origin: [f32; 2],
    image_size: [f32; 2],
    zoom: f32,
    split: f32,
    checker: f32,
    has_init: f32,
    _pad: [f32; 2],
}

/// When frames arrived and when they reached the GPU, for the latency figure.
#[derive(Debug, Default)]
pub struct UploadTimes {
    arrived: Option<(u64, Instant)>,
    /// Milliseconds from arrival to upload, for recent frames.
    pub latencies_ms: Vec<f64>,
}

/// Where the canvas was drawn this frame.
pub struct CanvasView {
    pub response: egui::Response,
    /// Where the image is (or would be) drawn.
    pub image_rect: Rect,
}

/// The canvas widget's state.
pub struct Canvas {
    frame: Option<Arc<FrameEvent>>,
    version: u64,
    init: Option<Arc<Frame>>,
    init_version: u64,
    /// Physical pixels per image pixel; `None` fits the image to the widget.
    zoom: Option<f32>,
    pan: Vec2,
    /// Fraction of the width showing the init image, when split view is on.
    pub split: Option<f32>,
    /// A region is being painted: a drag paints instead of panning.
    pub painting: bool,
    /// Where the image was last drawn.
    pub image_rect: Option<Rect>,
    wgpu: bool,
    fallback: Option<egui::TextureHandle>,
    fallback_version: u64,
    times: Arc<Mutex<UploadTimes>>,
}

impl Canvas {
    /// Sets up the wgpu pipeline when eframe runs on wgpu.
    pub fn new(render_state: Option<&egui_wgpu::RenderState>) -> Self {
        let wgpu = render_state.is_some_and(|rs| {
            let resources = CanvasResources::new(&rs.device, rs.target_format);
            rs.renderer.write().callback_resources.insert(resources);
            true
        });
        Self {
            frame: None,
            version: 0,
            init: None,
            init_version: 0,
            zoom: None,
            pan: Vec2::ZERO,
            split: None,
            painting: false,
            image_rect: None,
            wgpu,
            fallback: None,
            fallback_version: 0,
            times: Arc::new(Mutex::new(UploadTimes::default())),
        }
    }

    /// Shows a new frame from the next paint on.
    pub fn set_frame(&mut self, frame: Arc<FrameEvent>) {
        self.version += 1;
        if let Ok(mut t) = self.times.lock() {
            t.arrived = Some((self.version, frame.published));
        }
        self.frame = Some(frame);
    }

    /// Shows no frame (the checkerboard) from the next paint on.
    pub fn clear(&mut self) {
        self.version += 1;
        self.frame = None;
    }

    pub fn set_init(&mut self, init: Option<Arc<Frame>>) {
        self.init_version += 1;
        if init.is_none() {
            self.split = None;
        }
        self.init = init;
    }

    pub fn has_init(&self) -> bool {
        self.init.is_some()
    }

    /// The iteration of the frame on the canvas.
    pub fn shown_iteration(&self) -> Option<usize> {
        self.frame.as_ref().map(|f| f.iteration)
    }

    /// The frame on the canvas.
    pub fn frame(&self) -> Option<&Arc<FrameEvent>> {
        self.frame.as_ref()
    }

    /// How many frames have been handed to the texture.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Arrival-to-upload latencies of recent frames, in milliseconds.
    pub fn upload_latencies_ms(&self) -> Vec<f64> {
        self.times.lock().map(|t| t.latencies_ms.clone()).unwrap_or_default()
    }

    pub fn fit(&mut self) {
        self.zoom = None;
        self.pan = Vec2::ZERO;
    }

    pub fn zoom_label(&self) -> String {
        match self.zoom {
            Some(z) => format!("{:.0}%", z * 100.0),
            None => "fit".to_owned(),
        }
    }

    /// Draws the canvas filling the available space; scroll zooms, drag pans (unless a
    /// region is being painted), double-click fits.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> CanvasView {
        let (rect, response) = ui.allocate_exact_size(ui.available_size(), Sense::click_and_drag());
        let ppp = ui.ctx().pixels_per_point();
        let dims = self
            .frame
            .as_ref()
            .map_or(Vec2::new(256.0, 256.0), |f| Vec2::new(f.frame.width as f32, f.frame.height as f32));
        let fit_zoom = ((rect.width() * ppp) / dims.x).min((rect.height() * ppp) / dims.y).max(0.01);
        let mut zoom = self.zoom.unwrap_or(fit_zoom);
        if response.hovered() {
            let scroll = ui.input(|i| i.smooth_scroll_delta.y);
            if scroll != 0.0 {
                let factor = (scroll * 0.005).exp();
                let new_zoom = (zoom * factor).clamp(0.05, 64.0);
                // Keep the point under the pointer still.
                if let Some(pointer) = response.hover_pos() {
                    let centre = rect.center() + self.pan;
                    let offset = pointer - centre;
                    self.pan += offset - offset * (new_zoom / zoom);
                }
                zoom = new_zoom;
                self.zoom = Some(zoom);
            }
        }
        let shift = ui.input(|i| i.modifiers.shift);
        if response.dragged() && !self.painting && !(shift && self.split.is_some()) {
            self.pan += response.drag_delta();
            self.zoom = Some(zoom);
        }
        if response.double_clicked() && !self.painting {
            self.fit();
            zoom = fit_zoom;
        }
        let size_points = dims * zoom / ppp;
        let image_rect = Rect::from_center_size(rect.center() + self.pan, size_points);
        // Shift-drag moves the before/after split.
        if let (true, true, Some(pos)) = (self.split.is_some(), shift, response.interact_pointer_pos()) {
            self.split = Some(((pos.x - image_rect.left()) / image_rect.width()).clamp(0.0, 1.0));
        }
        // With no frame yet, the image sits far outside: only the checkerboard shows.
        let origin = if self.frame.is_some() {
            [image_rect.left() - rect.left(), image_rect.top() - rect.top()]
        } else {
            [-1.0e6, -1.0e6]
        };
        let uniform = ViewUniform {
            rect_min: [-1.0, -1.0],
            rect_max: [1.0, 1.0],
            widget_size: [rect.width(), rect.height()],
            image_origin: origin,
            image_size: [image_rect.width(), image_rect.height()],
            zoom,
            split: self.split.filter(|_| self.init.is_some()).unwrap_or(-1.0),
            checker: 12.0,
            has_init: if self.init.is_some() { 1.0 } else { 0.0 },
            _pad: [0.0; 2],
        };
        if self.wgpu {
            ui.painter().add(egui_wgpu::Callback::new_paint_callback(
                rect,
                CanvasCallback {
                    frame: self.frame.clone(),
                    version: self.version,
                    init: self.init.clone(),
                    init_version: self.init_version,
                    uniform,
                    times: Arc::clone(&self.times),
                },
            ));
        } else {
            self.paint_fallback(ui, rect, image_rect, zoom);
        }
        self.image_rect = Some(image_rect);
        CanvasView { response, image_rect }
    }

    fn paint_fallback(&mut self, ui: &egui::Ui, rect: Rect, image_rect: Rect, zoom: f32) {
        ui.painter().rect_filled(rect, 0.0, egui::Color32::from_gray(44));
        let Some(frame) = &self.frame else { return };
        if self.fallback_version != self.version || self.fallback.is_none() {
            let f = &frame.frame;
            let image = egui::ColorImage::from_rgba_unmultiplied([f.width as usize, f.height as usize], &f.rgba);
            let options = if zoom >= 1.0 { egui::TextureOptions::NEAREST } else { egui::TextureOptions::LINEAR };
            match &mut self.fallback {
                Some(tex) => tex.set(image, options),
                None => self.fallback = Some(ui.ctx().load_texture("canvas-frame", image, options)),
            }
            self.fallback_version = self.version;
            if let Ok(mut t) = self.times.lock() {
                t.record_upload(self.version);
            }
        }
        if let Some(tex) = &self.fallback {
            let uv = Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
            ui.painter().with_clip_rect(rect).image(tex.id(), image_rect, uv, egui::Color32::WHITE);
        }
    }

    /// Whether the texture shows the newest frame (tests and the latency figure).
    pub fn texture_is_current(&self) -> bool {
        if self.wgpu {
            self.times.lock().map(|t| t.arrived.is_none()).unwrap_or(false)
        } else {
            self.fallback_version == self.version
        }
    }
}

impl UploadTimes {
    fn record_upload(&mut self, version: u64) {
        if let Some((v, at)) = self.arrived {
            if v == version {
                self.latencies_ms.push(at.elapsed().as_secs_f64() * 1000.0);
                if self.latencies_ms.len() > 240 {
                    self.latencies_ms.remove(0);
                }
                self.arrived = None;
            }
        }
    }
}

struct CanvasCallback {
    frame: Option<Arc<FrameEvent>>,
    version: u64,
    init: Option<Arc<Frame>>,
    init_version: u64,
    uniform: ViewUniform,
    times: Arc<Mutex<UploadTimes>>,
}

impl egui_wgpu::CallbackTrait for CanvasCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<CanvasResources>() else { return Vec::new() };
        if let Some(frame) = &self.frame {
            if res.frame.version != self.version {
                res.frame.upload(device, queue, &frame.frame, self.version);
                res.bind_group = None;
                if let Ok(mut t) = self.times.lock() {
                    t.record_upload(self.version);
                }
            }
        }
        if let Some(init) = &self.init {
            if res.init.version != self.init_version {
                res.init.upload(device, queue, init, self.init_version);
                res.bind_group = None;
            }
        }
        queue.write_buffer(&res.uniform, 0, bytemuck::bytes_of(&self.uniform));
        if res.bind_group.is_none() {
            res.bind_group = Some(res.make_bind_group(device));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<CanvasResources>() else { return };
        let Some(bind_group) = &res.bind_group else { return };
        pass.set_pipeline(&res.pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.draw(0..4, 0..1);
    }
}

/// A texture that is rewritten in place while its size stays the same.
struct LiveTexture {
    texture: wgpu::Texture,
    view: wgpu::TextureView,
    size: (u32, u32),
    version: u64,
}

impl LiveTexture {
    fn new(device: &wgpu::Device, width: u32, height: u32, label: &str) -> Self {
        let texture = device.create_texture(&wgpu::TextureDescriptor {
            label: Some(label),
            size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba8UnormSrgb,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
        Self { texture, view, size: (width, height), version: 0 }
    }

    fn upload(&mut self, device: &wgpu::Device, queue: &wgpu::Queue, frame: &Frame, version: u64) {
        let (w, h) = (frame.width.max(1), frame.height.max(1));
        if self.size != (w, h) {
            *self = Self::new(device, w, h, "clipcanvas frame");
        }
        if frame.rgba.len() == (w * h * 4) as usize {
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                &frame.rgba,
                wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(4 * w), rows_per_image: Some(h) },
                wgpu::Extent3d { width: w, height: h, depth_or_array_layers: 1 },
            );
        }
        self.version = version;
    }
}

struct CanvasResources {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    sampler: wgpu::Sampler,
    uniform: wgpu::Buffer,
    frame: LiveTexture,
    init: LiveTexture,
    bind_group: Option<wgpu::BindGroup>,
}

impl CanvasResources {
    fn new(device: &wgpu::Device, target: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("canvas"),
            source: wgpu::ShaderSource::Wgsl(include_str!("../../shaders/canvas.wgsl").into()),
        });
        let texture_entry = |binding| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type: wgpu::TextureSampleType::Float { filterable: true },
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("canvas"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::VERTEX_FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: NonZeroU64::new(std::mem::size_of::<ViewUniform>() as u64),
                    },
                    count: None,
                },
                texture_entry(1),
                texture_entry(2),
                wgpu::BindGroupLayoutEntry {
                    binding: 3,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
                    count: None,
                },
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("canvas"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("canvas"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                targets: &[Some(target.into())],
                compilation_options: wgpu::PipelineCompilationOptions::default(),
            }),
            primitive: wgpu::PrimitiveState { topology: wgpu::PrimitiveTopology::TriangleStrip, ..Default::default() },
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        let sampler = device.create_sampler(&wgpu::SamplerDescriptor {
            label: Some("canvas"),
            mag_filter: wgpu::FilterMode::Linear,
            min_filter: wgpu::FilterMode::Linear,
            ..Default::default()
        });
        let uniform = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("canvas view"),
            size: std::mem::size_of::<ViewUniform>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Self {
            pipeline,
            layout,
            sampler,
            uniform,
            frame: LiveTexture::new(device, 1, 1, "clipcanvas frame"),
            init: LiveTexture::new(device, 1, 1, "clipcanvas init"),
            bind_group: None,
        }
    }

    fn make_bind_group(&self, device: &wgpu::Device) -> wgpu::BindGroup {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("canvas"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: self.uniform.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&self.frame.view) },
                wgpu::BindGroupEntry { binding: 2, resource: wgpu::BindingResource::TextureView(&self.init.view) },
                wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::Sampler(&self.sampler) },
            ],
        })
    }
}
