"""One simulated grasp attempt: a randomised scene, a scripted grasp, a label from physics, and frames.

The hand floats: its base is welded to a mocap body that the script moves (approach from above, descend,
close, lift, shake, hold). Whether the object is still held above the table at the end decides the label;
nothing else does. Camera, light, colours, textures and distractor objects are randomised per episode
(domain randomisation) so that a classifier has to look at the hand and the object.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

os.environ.setdefault("MUJOCO_GL", "egl")  # off-screen rendering without a display; osmesa works too

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from .hand import Hand  # noqa: E402

OBJECT_TYPES = ("sphere", "box", "cylinder", "capsule", "ellipsoid")
TIMESTEP = 0.002
SETTLE_S, APPROACH_S, DESCEND_S, CLOSE_S, LIFT_S, SHAKE_S, HOLD_S = 0.2, 0.5, 0.5, 0.6, 0.7, 0.48, 0.4
HELD_MIN_LIFT = 0.05  # metres the object must still be above its resting height at the end
SURELY_DROPPED_LIFT = 0.01  # below this lift after the lift move, with no hand contact, the object lies on the table
_GEOM_TYPES = {
    "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
    "box": mujoco.mjtGeom.mjGEOM_BOX,
    "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER,
    "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
    "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
}
# Collision bits: the object touches table, hand and distractors; distractors touch only the object.
_OBJECT_AFFINITY, _DISTRACTOR_BIT = 3, 2


@dataclass
class Distractor:
    shape: str
    size: list[float]
    position: list[float]
    rgba: list[float]


@dataclass
class EpisodeParams:
    """Everything random about one episode, drawn from (seed, index) alone."""

    index: int
    object_type: str
    object_size: list[float]  # MuJoCo geom size of the object
    rest_height: float  # height of the object's centre when it rests on the table
    object_mass: float
    object_friction: float
    object_rgba: list[float]
    object_xy: list[float]
    object_yaw: float
    closure: float  # fraction of the hand's full finger closure
    finger_strength: float  # position gain of the finger actuators
    approach_offset: list[float]  # grasp site relative to the object: x, y, and height above palm contact
    lift_height: float
    shake_amplitude: float
    distractors: list[Distractor] = field(default_factory=list)
    table_rgb: list[list[float]] = field(default_factory=list)  # two colours of the table's texture
    table_pattern: str = "flat"
    table_repeat: float = 1.0
    sky_rgb: list[list[float]] = field(default_factory=list)
    hand_rgba: list[float] = field(default_factory=list)
    light_pos: list[float] = field(default_factory=list)
    light_diffuse: float = 0.7
    ambient: float = 0.3
    camera: dict = field(default_factory=dict)


def _color(rng: np.random.Generator, low: float = 0.0, high: float = 1.0) -> list[float]:
    return [float(v) for v in rng.uniform(low, high, 3)]


def _object_size(rng: np.random.Generator, shape: str, s: float) -> tuple[list[float], float]:
    """Geom size and resting centre height for a characteristic half-size s, the object upright."""
    if shape == "sphere":
        return [s, 0, 0], s
    if shape == "box":
        size = [s, s * rng.uniform(0.6, 1.0), s * rng.uniform(0.8, 1.3)]
        return size, size[2]
    if shape == "cylinder":
        size = [s, s * rng.uniform(1.0, 1.5), 0]
        return size, size[1]
    if shape == "capsule":
        size = [s * 0.8, s * rng.uniform(0.5, 1.0), 0]
        return size, size[0] + size[1]
    size = [s * rng.uniform(1.0, 1.3), s * rng.uniform(0.8, 1.0), s * rng.uniform(0.8, 1.1)]
    return size, size[2]


def _approach_offset(rng: np.random.Generator) -> list[float]:
    """Where the grasp site goes relative to the object: mostly close to a grasp that can hold, sometimes
    far enough off to push the object away or close on air."""
    if rng.random() < 0.12:
        offset = rng.uniform([-0.07, -0.07, -0.006], [0.07, 0.05, 0.03])
    else:
        offset = rng.uniform([-0.015, -0.035, -0.006], [0.015, 0.0, 0.01])
    return [float(v) for v in offset]


def sample_params(seed: int, index: int) -> EpisodeParams:
    """Draw one episode. The ranges straddle the edge between holding and dropping (grip closure and
    strength, approach offset, object size), so failures include near-misses and successes vary."""
    rng = np.random.default_rng([seed, index])
    shape = OBJECT_TYPES[int(rng.integers(len(OBJECT_TYPES)))]
    size, rest_height = _object_size(rng, shape, float(rng.uniform(0.028, 0.045)))
    object_xy = [float(v) for v in rng.uniform(-0.08, 0.08, 2)]
    distractors = []
    for _ in range(int(rng.integers(1, 3))):
        for _attempt in range(20):
            xy = rng.uniform([-0.35, -0.2], [0.35, 0.35])
            away_from_hand = abs(xy[0] - object_xy[0]) > 0.14 or xy[1] - object_xy[1] > 0.14
            if away_from_hand:
                d_shape = ["sphere", "box", "cylinder", "capsule", "ellipsoid"][int(rng.integers(5))]
                d_size, d_height = _object_size(rng, d_shape, float(rng.uniform(0.012, 0.03)))
                distractors.append(Distractor(d_shape, d_size, [float(xy[0]), float(xy[1]), d_height], _color(rng) + [1.0]))
                break
    # A side view from either side of the hand, as a lab camera beside the robot would see it.
    azimuth = float(rng.uniform(-35, 35) + (180 if rng.random() < 0.5 else 0))
    return EpisodeParams(
        index=index,
        object_type=shape,
        object_size=[float(v) for v in size],
        rest_height=float(rest_height),
        object_mass=float(rng.uniform(0.03, 0.4)),
        object_friction=float(rng.uniform(0.4, 1.5)),
        object_rgba=_color(rng) + [1.0],
        object_xy=object_xy,
        object_yaw=float(rng.uniform(0, math.pi)),
        closure=float(rng.uniform(0.45, 1.0)),
        finger_strength=float(rng.uniform(2.0, 7.0)),
        approach_offset=_approach_offset(rng),
        lift_height=float(rng.uniform(0.15, 0.2)),
        shake_amplitude=float(rng.uniform(0.01, 0.05)),
        distractors=distractors,
        table_rgb=[_color(rng, 0.2, 0.95), _color(rng, 0.2, 0.95)],
        table_pattern=["flat", "checker", "gradient"][int(rng.integers(3))],
        table_repeat=float(rng.uniform(1, 8)),
        sky_rgb=[_color(rng, 0.0, 1.0), _color(rng, 0.0, 1.0)],
        hand_rgba=_color(rng, 0.45, 1.0) + [1.0],
        light_pos=[float(v) for v in rng.uniform([-1.0, -1.0, 1.2], [1.0, 1.0, 2.5])],
        light_diffuse=float(rng.uniform(0.4, 0.9)),
        ambient=float(rng.uniform(0.15, 0.45)),
        camera={
            "azimuth": azimuth,
            "elevation": float(rng.uniform(-35, -15)),
            "distance": float(rng.uniform(0.45, 0.6)),
            # Aimed between the table and the lifted hand, so both are in view.
            "lookat": [object_xy[0] + float(rng.uniform(-0.03, 0.03)), object_xy[1] + float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0.1, 0.17))],
            "fovy": float(rng.uniform(40, 50)),
        },
    )


def _all_bodies(body):
    yield body
    for child in body.bodies:
        yield from _all_bodies(child)


def _strip_model(spec: mujoco.MjSpec, hand: Hand) -> None:
    """Remove the model file's own arm joints and scene, and its image textures (slow to upload)."""
    for joint in list(spec.joints):
        if joint.name.startswith(hand.strip_prefixes):
            spec.delete(joint)
    for actuator in list(spec.actuators):
        if actuator.name.startswith(hand.strip_prefixes):
            spec.delete(actuator)
    for name in hand.strip_bodies:
        spec.delete(spec.body(name))
    for name in hand.strip_sites:
        spec.delete(spec.site(name))
    for name in hand.strip_geoms:
        spec.delete(spec.geom(name))
    for camera in list(spec.cameras):
        spec.delete(camera)
    for light in list(spec.lights):
        spec.delete(light)
    for material in list(spec.materials):
        if material.name not in hand.keep_materials:
            spec.delete(material)
    for texture in list(spec.textures):
        spec.delete(texture)


def _mount_hand(spec: mujoco.MjSpec, hand: Hand, params: EpisodeParams) -> None:
    quat = np.zeros(4)
    mujoco.mju_euler2Quat(quat, np.array(hand.base_euler), "xyz")
    base = spec.body(hand.base_body)
    base.alt.type = mujoco.mjtOrientation.mjORIENTATION_QUAT
    base.quat = quat
    base.add_freejoint()
    spec.worldbody.add_body(name="hand_mocap", mocap=True, pos=base.pos, quat=quat)
    weld = spec.add_equality(type=mujoco.mjtEq.mjEQ_WELD, name1="hand_mocap", name2=hand.base_body, objtype=mujoco.mjtObj.mjOBJ_BODY)
    data = np.zeros(len(weld.data))
    data[10] = 1.0  # torque scale; zero relative pose means "as in the initial configuration"
    weld.data = data
    weld.solref = [0.01, 1.0]
    for body in _all_bodies(base):
        body.gravcomp = 1.0  # the arm that would carry the hand is not simulated
    for actuator in spec.actuators:
        if actuator.name in hand.finger_close or actuator.name in hand.thumb_pose:
            actuator.gainprm[0] = params.finger_strength
            actuator.biasprm[1] = -params.finger_strength
    spec.material("MatViz").rgba = params.hand_rgba


def _add_scene(spec: mujoco.MjSpec, params: EpisodeParams) -> None:
    builtin = {"flat": mujoco.mjtBuiltin.mjBUILTIN_FLAT, "checker": mujoco.mjtBuiltin.mjBUILTIN_CHECKER, "gradient": mujoco.mjtBuiltin.mjBUILTIN_GRADIENT}
    spec.add_texture(name="table_tex", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=builtin[params.table_pattern],
                     width=64, height=64, rgb1=params.table_rgb[0], rgb2=params.table_rgb[1])
    table_material = spec.add_material(name="table_mat", texrepeat=[params.table_repeat, params.table_repeat])
    table_material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "table_tex"
    spec.add_texture(name="sky", type=mujoco.mjtTexture.mjTEXTURE_SKYBOX, builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                     width=64, height=64, rgb1=params.sky_rgb[0], rgb2=params.sky_rgb[1])
    world = spec.worldbody
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.45, 0.45, 0.025], pos=[0, 0, -0.025], material="table_mat")
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.75], rgba=params.sky_rgb[1] + [1.0])
    world.add_light(name="key", pos=params.light_pos, dir=[-v for v in params.light_pos], diffuse=[params.light_diffuse] * 3,
                    castshadow=True, type=mujoco.mjtLightType.mjLIGHT_SPOT, cutoff=60)
    spec.visual.headlight.ambient = [params.ambient] * 3
    spec.visual.headlight.diffuse = [0.3] * 3
    spec.visual.quality.shadowsize = 1024  # MuJoCo's 8192 default costs ~10x the render time on a CPU
    spec.visual.quality.offsamples = 4

    obj = world.add_body(name="object", pos=[*params.object_xy, params.rest_height],
                         quat=[math.cos(params.object_yaw / 2), 0, 0, math.sin(params.object_yaw / 2)])
    obj.add_freejoint()
    obj.add_geom(name="object", type=_GEOM_TYPES[params.object_type], size=params.object_size, mass=params.object_mass,
                 friction=[params.object_friction, 0.005, 0.0001], condim=4, rgba=params.object_rgba,
                 conaffinity=_OBJECT_AFFINITY)
    for i, d in enumerate(params.distractors):
        world.add_geom(name=f"distractor{i}", type=_GEOM_TYPES[d.shape], size=d.size, pos=d.position, rgba=d.rgba,
                       contype=_DISTRACTOR_BIT, conaffinity=_DISTRACTOR_BIT)


# The hand's model file parsed and stripped once per process (stripping costs ~12 ms, more than compiling the
# episode's model); each episode edits a copy, which compiles to the same model as a freshly stripped file.
_stripped_specs: dict[str, mujoco.MjSpec] = {}


def _stripped_spec(hand: Hand) -> mujoco.MjSpec:
    if hand.name not in _stripped_specs:
        spec = mujoco.MjSpec.from_file(str(hand.model_path()))
        _strip_model(spec, hand)
        _stripped_specs[hand.name] = spec
    return _stripped_specs[hand.name].copy()


def build_model(hand: Hand, params: EpisodeParams) -> mujoco.MjModel:
    spec = _stripped_spec(hand)
    _mount_hand(spec, hand, params)
    _add_scene(spec, params)
    spec.option.timestep = TIMESTEP
    return spec.compile()


def _render_assets(model: mujoco.MjModel) -> tuple[tuple, list[np.ndarray]] | None:
    """What mjr_makeContext bakes into a render context and a later model cannot change: buffer and shadow
    sizes, the quality of the built-in shapes, texture slots, plane grids and mesh geometry. None for models
    whose context is never reused: height fields and skins are uploaded per model too, the scene kept with the
    context is sized for a model's skins and flexes, and an infinite plane's grid depends on the model's extent
    (graspcheck's scenes have none of them)."""
    planes = model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE
    if model.nhfield or model.nskin or model.nflex or (model.geom_size[planes, :2] <= 0).any():
        return None
    vis = model.vis
    scalars = (vis.global_.offwidth, vis.global_.offheight, vis.quality.offsamples, vis.quality.shadowsize,
               vis.quality.numslices, vis.quality.numstacks, vis.quality.numquads, model.nmesh)
    arrays = [model.tex_type, model.geom_size[planes], model.mesh_vertadr, model.mesh_vertnum, model.mesh_normaladr,
              model.mesh_texcoordadr, model.mesh_faceadr, model.mesh_facenum, model.mesh_vert, model.mesh_normal,
              model.mesh_texcoord, model.mesh_face, model.mesh_facenormal, model.mesh_facetexcoord]
    return scalars, [a.copy() for a in arrays]


def _same_assets(a: tuple[tuple, list[np.ndarray]] | None, b: tuple[tuple, list[np.ndarray]] | None) -> bool:
    return (a is not None and b is not None and a[0] == b[0]
            and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a[1], b[1])))


def _refresh_context(model: mujoco.MjModel, context: mujoco.MjrContext) -> None:
    """Give a context made for an earlier model with the same render assets this model's parts that do differ:
    texture images, the material table (as mjr_makeContext's makeMaterial fills it; the renderer falls back to
    it for geoms whose scene entry names no texture) and the extent-scaled shadow clip. Fog settings are GL
    state fixed at creation; graspcheck never enables fog."""
    context.shadowClip = model.stat.extent * model.vis.map.shadowclip
    context.shadowScale = model.vis.map.shadowscale
    context.lineWidth = model.vis.global_.linewidth
    max_materials, roles = len(context.mat_texuniform), model.mat_texid.shape[1]
    rgb = int(mujoco.mjtTextureRole.mjTEXROLE_RGB)
    texid = np.full((max_materials, roles), -1, dtype=np.int32)
    uniform = np.zeros(max_materials, dtype=np.int32)
    repeat = np.zeros((max_materials, 2), dtype=np.float32)
    skyboxes = np.flatnonzero(model.tex_type == mujoco.mjtTexture.mjTEXTURE_SKYBOX)
    if skyboxes.size:
        texid[max_materials - 1, rgb] = skyboxes[0]  # the skybox's slot, after all materials
    textured = np.flatnonzero(model.mat_texid[:, rgb] >= 0)
    texid[textured] = model.mat_texid[textured]
    uniform[textured] = model.mat_texuniform[textured]
    repeat[textured] = model.mat_texrepeat[textured]
    context.mat_texid[:] = texid.ravel()
    context.mat_texuniform[:] = uniform
    context.mat_texrepeat[:] = repeat.ravel()
    for texture in range(model.ntex):
        mujoco.mjr_uploadTexture(model, context, texture)


class OffscreenRenderer:
    """One OpenGL context per process. The MuJoCo render context (meshes, built-in shapes, fonts, buffers;
    ~0.05 s to make) is kept for the next model when that model has the same render assets, and only its
    textures and material table are uploaded again: the frames are the same as with a fresh context."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        # Frames are drawn into MuJoCo's offscreen framebuffer, never into this context's own surface.
        self._gl = mujoco.GLContext(width, height)
        self._gl.make_current()
        self._context: mujoco.MjrContext | None = None
        self._assets: tuple[tuple, list[np.ndarray]] | None = None
        self._scene: mujoco.MjvScene | None = None
        self._model: mujoco.MjModel | None = None
        self.contexts_made = 0  # how often the render context had to be made: once per process when reused

    def bind(self, model: mujoco.MjModel) -> None:
        # The offscreen buffer only needs the frame's size. The hand's model file asks for 3024x1680 with 4x
        # multisampling, which took 0.15 s to allocate per context and changes no pixel of the frame.
        model.vis.global_.offwidth, model.vis.global_.offheight = self.width, self.height
        assets = _render_assets(model)
        if self._context is not None and _same_assets(assets, self._assets):
            _refresh_context(model, self._context)
        else:
            self.release_context()
            self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
            self.contexts_made += 1
            self._assets = assets
            # The scene is kept with the context: mjv_makeScene sizes only its geom list and its skin and flex
            # buffers by the model (none here: _render_assets is None for skins and flexes), and mjv_updateScene
            # fills it anew for each frame. Making one cost ~2 ms an episode.
            self._scene = mujoco.MjvScene(model, maxgeom=2000)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._model = model

    def render(self, data: mujoco.MjData, camera: dict) -> np.ndarray:
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = camera["lookat"]
        cam.distance, cam.azimuth, cam.elevation = camera["distance"], camera["azimuth"], camera["elevation"]
        self._model.vis.global_.fovy = camera["fovy"]
        mujoco.mjv_updateScene(self._model, data, mujoco.MjvOption(), None, cam, mujoco.mjtCatBit.mjCAT_ALL, self._scene)
        viewport = mujoco.MjrRect(0, 0, self.width, self.height)
        mujoco.mjr_render(viewport, self._scene, self._context)
        pixels = np.empty((self.height, self.width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(pixels, None, viewport, self._context)
        return np.flipud(pixels).copy()

    def release_context(self) -> None:
        if self._context is not None:
            self._context.free()
            self._context = None
            self._assets = None

    def close(self) -> None:
        # osmesa prints an error at exit unless its context is freed explicitly.
        self.release_context()
        self._gl.free()


@dataclass
class EpisodeResult:
    params: EpisodeParams
    success: bool
    final_lift: float  # object centre height above its resting height at the end, metres
    max_lift: float
    hand_contacts: int  # hand-object contacts at the end
    touched: bool  # whether the hand touched the object at all
    frames: list[np.ndarray]
    frame_lifts: list[float]  # the object's lift at each frame's moment, metres

    def manifest_fields(self) -> dict:
        p = self.params
        return {
            "object": p.object_type,
            "object_size": " ".join(f"{v:.4f}" for v in p.object_size if v),
            "object_mass": f"{p.object_mass:.3f}",
            "object_friction": f"{p.object_friction:.2f}",
            "closure": f"{p.closure:.3f}",
            "finger_strength": f"{p.finger_strength:.2f}",
            "approach_offset": " ".join(f"{v:.4f}" for v in p.approach_offset),
            "final_height": f"{self.final_lift:.4f}",
            "max_height": f"{self.max_lift:.4f}",
            "hand_contacts": self.hand_contacts,
            "touched": int(self.touched),
        }


def _hand_contacts(data: mujoco.MjData, object_geom: int, is_hand: np.ndarray) -> int:
    """Contacts between the object and a hand geom (is_hand: a flag per geom). Vectorised: this runs after
    every step until the hand first touches the object, and a Python loop over the contacts cost about as
    much as the physics step."""
    geoms = data.contact.geom  # (ncon, 2)
    return int(((geoms == object_geom) & is_hand[geoms[:, ::-1]]).any(axis=1).sum())


def _touch_table(object_geom: int, is_hand: np.ndarray) -> np.ndarray:
    """touching[a, b]: whether a contact between geoms a and b is one between the object and the hand, the
    test _hand_contacts makes, looked up with one index per contact instead of four array operations."""
    is_object = np.arange(len(is_hand)) == object_geom
    return (is_object[:, None] & is_hand[None, :]) | (is_hand[:, None] & is_object[None, :])


def _smoothstep_path(start: np.ndarray, goal: np.ndarray, seconds: float) -> np.ndarray:
    """The mocap positions of a move, one row a step: start + (goal - start) * smoothstep((i + 1) / n), the
    same floating-point operations per element as computing each step's position on its own."""
    n = max(1, int(seconds / TIMESTEP))
    s = np.arange(1, n + 1) / n
    return start + (goal - start) * (s * s * (3 - 2 * s))[:, None]


def run_episode(hand: Hand, params: EpisodeParams, renderer: OffscreenRenderer | None, frames: int,
                wanted: tuple[bool, bool] = (True, True)) -> EpisodeResult:
    """Simulate the scripted grasp; render `frames` frames spread over the time after the lift.

    wanted says whether the frames of a not_success and of a success outcome are needed (a class whose quota
    is full needs none): an unwanted outcome is not rendered, and an unwanted drop ends as soon as it is sure,
    an object lying on the table, untouched, when the hand has lifted. The wanted episodes are the same either way."""
    model = build_model(hand, params)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    actuator = {model.actuator(i).name: i for i in range(model.nu)}
    object_geom = model.geom("object").id
    object_body = model.body("object").id
    base_id = model.body(hand.base_body).id
    is_hand = np.array([_is_descendant(model, model.geom_bodyid[g], base_id) for g in range(model.ngeom)])
    touching = _touch_table(object_geom, is_hand)
    site_to_mocap = data.site(hand.grasp_site).xpos - data.mocap_pos[0]
    # Views of the simulation's own arrays, looked up once: the control loop below runs ~1300 times an episode
    # and its Python overhead was a few percent of the episode.
    mocap, xpos, mj_step = data.mocap_pos, data.xpos, mujoco.mj_step
    touched = False

    def touches() -> bool:
        geoms = data.contact.geom  # (ncon, 2)
        return bool(touching[geoms[:, 0], geoms[:, 1]].any())

    def step(n: int = 1) -> None:
        nonlocal touched
        mj_step(model, data, nstep=n)
        touched = touched or touches()

    def move_site(target: np.ndarray, seconds: float, on_step=None) -> None:
        nonlocal touched
        for position in _smoothstep_path(mocap[0].copy(), np.asarray(target) - site_to_mocap, seconds):  # no jerk
            mocap[0] = position
            mj_step(model, data)
            if not touched:
                touched = touches()
            if on_step:
                on_step()

    step(int(SETTLE_S / TIMESTEP))
    rest = xpos[object_body].copy()
    rest_z = rest[2]

    def object_lift() -> float:
        return float(xpos[object_body, 2] - rest_z)

    dx, dy, dz = params.approach_offset
    # Bring the palm down onto the object's top (the grasp site hangs palm_gap below the palm).
    grasp = rest + np.array([dx, dy, params.rest_height - hand.palm_gap + dz])
    move_site(grasp + [0, 0, 0.15], APPROACH_S)
    move_site(grasp, DESCEND_S)
    for name, target in hand.finger_close.items():
        data.ctrl[actuator[name]] = target * params.closure
    for name, target in hand.thumb_pose.items():
        data.ctrl[actuator[name]] = target
    step(int(CLOSE_S / TIMESTEP))
    lifted = grasp + [0, 0, params.lift_height]
    move_site(lifted, LIFT_S)
    lift = object_lift()
    if not wanted[0] and lift < SURELY_DROPPED_LIFT and not touches():
        # The hand is 15-20 cm up and holds nothing: shaking and holding cannot raise the object 5 cm.
        return EpisodeResult(params=params, success=False, final_lift=lift, max_lift=lift, hand_contacts=0,
                             touched=touched, frames=[], frame_lifts=[])

    # Frames are spread evenly over the hold after the shake, the last at the very end: a frame must show the
    # outcome. One taken during the shake can show an object still in the hand that falls a moment later, an
    # image that no classifier can call not_success.
    after_lift = int((SHAKE_S + HOLD_S) / TIMESTEP)
    shake, hold = int(SHAKE_S / TIMESTEP), after_lift - int(SHAKE_S / TIMESTEP)
    capture = {shake + int(round(hold * (k + 1) / frames)) for k in range(frames)}
    # The moments of the frames, rendered once the outcome says whether they are wanted.
    snapshots: list[mujoco.MjData] = []
    frame_lifts: list[float] = []
    clock, max_lift = 0, 0.0

    def after_step() -> None:
        nonlocal clock, max_lift
        lift = object_lift()
        max_lift = max(max_lift, lift)
        if clock in capture:
            frame_lifts.append(lift)
            if renderer is not None:
                snapshots.append(copy.copy(data))
        clock += 1

    after_step()
    for k in range(4):
        sign = 1 if k % 2 == 0 else -1
        move_site(lifted + [sign * params.shake_amplitude, 0, 0], SHAKE_S / 4, after_step)
    for _ in range(after_lift - clock + 1):
        step()
        after_step()
    final_lift = object_lift()
    success = final_lift > HELD_MIN_LIFT
    images: list[np.ndarray] = []
    if renderer is not None and wanted[success]:
        renderer.bind(model)
        images = [renderer.render(snapshot, params.camera) for snapshot in snapshots]
    return EpisodeResult(
        params=params,
        success=success,
        final_lift=final_lift,
        max_lift=max_lift,
        hand_contacts=_hand_contacts(data, object_geom, is_hand),
        touched=touched,
        frames=images,
        frame_lifts=frame_lifts,
    )


def _is_descendant(model: mujoco.MjModel, body: int, ancestor: int) -> bool:
    while body > 0:
        if body == ancestor:
            return True
        body = model.body_parentid[body]
    return False
