// The live canvas: draws the current frame into the canvas widget's rectangle with
// zoom and pan, nearest-neighbour pixels when zoomed in and filtered sampling when
// zoomed out, a checkerboard around the image, and a before/after split against the
// init image.

struct View {
    // The widget's rectangle in normalised device coordinates.
    rect_min: vec2<f32>,
    rect_max: vec2<f32>,
    // The widget's size and the image's placement inside it, in screen pixels.
    widget_size: vec2<f32>,
    image_origin: vec2<f32>,
    image_size: vec2<f32>,
    // Screen pixels per image pixel.
    zoom: f32,
    // Fraction of the image width (from the left) that shows the init image; < 0 is off.
    split: f32,
    // Checkerboard square size in screen pixels.
    checker: f32,
    has_init: f32,
    _pad: vec2<f32>,
};

@group(0) @binding(0) var<uniform> view: View;
@group(0) @binding(1) var frame_tex: texture_2d<f32>;
@group(0) @binding(2) var init_tex: texture_2d<f32>;
@group(0) @binding(3) var smooth_sampler: sampler;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
    // Widget-local position in screen pixels.
    @location(0) local: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    // A triangle strip over the widget's rectangle.
    let corner = vec2<f32>(f32(index & 1u), f32((index >> 1u) & 1u));
    let ndc = mix(view.rect_min, view.rect_max, corner);
    var out: VertexOut;
    out.position = vec4<f32>(ndc, 0.0, 1.0);
    // NDC y grows upwards, screen y downwards.
    out.local = vec2<f32>(corner.x, 1.0 - corner.y) * view.widget_size;
    return out;
}

fn checkerboard(p: vec2<f32>) -> vec4<f32> {
    let cell = floor(p / max(view.checker, 1.0));
    let odd = (i32(cell.x) + i32(cell.y)) & 1;
    let shade = select(0.16, 0.22, odd == 1);
    return vec4<f32>(shade, shade, shade, 1.0);
}

fn sample_image(tex: texture_2d<f32>, uv: vec2<f32>) -> vec4<f32> {
    let dims = vec2<f32>(textureDimensions(tex));
    if (view.zoom >= 1.0) {
        // Zoomed in: show each image pixel as a crisp square.
        let texel = clamp(vec2<i32>(floor(uv * dims)), vec2<i32>(0), vec2<i32>(dims) - vec2<i32>(1));
        return textureLoad(tex, texel, 0);
    }
    return textureSampleLevel(tex, smooth_sampler, uv, 0.0);
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let uv = (in.local - view.image_origin) / view.image_size;
    if (any(uv < vec2<f32>(0.0)) || any(uv >= vec2<f32>(1.0))) {
        return checkerboard(in.local);
    }
    let show_init = view.has_init > 0.5 && view.split >= 0.0 && uv.x < view.split;
    var colour = sample_image(frame_tex, uv);
    if (show_init) {
        colour = sample_image(init_tex, uv);
    }
    // A thin line marks the split.
    if (view.has_init > 0.5 && view.split >= 0.0 && abs(uv.x - view.split) * view.image_size.x < 1.0) {
        colour = vec4<f32>(1.0, 1.0, 1.0, 1.0);
    }
    return vec4<f32>(colour.rgb, 1.0);
}
