package lcs.sample

import android.app.Activity
import android.graphics.Bitmap
import android.graphics.Color
import android.os.BatteryManager
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.os.PowerManager
import android.os.SystemClock
import android.view.View
import android.widget.AdapterView
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.CheckBox
import android.widget.ImageView
import android.widget.LinearLayout
import android.widget.Spinner
import android.widget.TextView
import lcs.core.BundleError
import lcs.core.BundleSource
import lcs.core.Bundles
import lcs.core.OpenBundle
import lcs.core.Policy
import lcs.core.PolicyLevel
import lcs.core.PolicyState
import lcs.core.Rung
import lcs.core.Signals
import java.io.FileNotFoundException
import java.util.concurrent.Executors

/**
 * Loads the bundle in assets/bundle, shows the manifest's sample images with the prediction and
 * latency, and switches level by hand (picker) or automatically (the shared policy fed by
 * BatteryManager and PowerManager). A bad bundle shows its problem on screen instead of crashing.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor() // every ORT call happens here
    private val ui = Handler(Looper.getMainLooper())
    private lateinit var status: TextView
    private lateinit var picker: Spinner
    private lateinit var auto: CheckBox
    private lateinit var simulate: CheckBox
    private lateinit var image: ImageView
    private lateinit var result: TextView
    private lateinit var signalsView: TextView

    private var bundle: OpenBundle? = null
    private var engine: LevelEngine? = null
    private var ladder: List<Rung> = emptyList()
    private var policyState: PolicyState = Policy.initialState()
    private var sample = 0
    // Latencies at the current level, newest last; written by the worker, read by the UI thread.
    private val recent: MutableList<Double> = java.util.Collections.synchronizedList(ArrayList<Double>())

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        buildViews()
        worker.execute { load() }
    }

    override fun onDestroy() {
        ui.removeCallbacksAndMessages(null)
        worker.execute { engine?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    private fun buildViews() {
        val column = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(32, 48, 32, 32) }
        status = TextView(this).apply { text = "loading bundle..." }
        picker = Spinner(this)
        auto = CheckBox(this).apply { text = "auto (policy)" }
        simulate = CheckBox(this).apply { text = "simulate pressure (thermal serious)" }
        image = ImageView(this).apply { minimumHeight = 320; minimumWidth = 320; scaleType = ImageView.ScaleType.FIT_CENTER }
        result = TextView(this).apply { textSize = 20f }
        signalsView = TextView(this)
        val next = Button(this).apply { text = "next sample"; setOnClickListener { sample++; infer() } }
        listOf(status, picker, auto, simulate, image, result, next, signalsView).forEach { column.addView(it) }
        setContentView(column)
        picker.onItemSelectedListener = object : AdapterView.OnItemSelectedListener {
            override fun onItemSelected(parent: AdapterView<*>?, view: View?, position: Int, id: Long) {
                if (!auto.isChecked) switchTo(position, "picked")
            }
            override fun onNothingSelected(parent: AdapterView<*>?) {}
        }
        auto.setOnCheckedChangeListener { _, checked -> if (checked) tick() }
    }

    private fun showError(message: String) = ui.post {
        status.text = message
        status.setTextColor(Color.RED)
        picker.isEnabled = false
        auto.isEnabled = false
    }

    /** Read and verify the bundle; any problem ends here, on screen. */
    private fun load() {
        try {
            val source = object : BundleSource {
                override fun read(path: String): ByteArray? = try {
                    assets.open("bundle/$path").use { it.readBytes() }
                } catch (missing: FileNotFoundException) {
                    null
                }
            }
            val opened = Bundles.open(source, "onnx")
            val rungs = opened.manifest.ladder()
            if (rungs.isEmpty()) throw BundleError("the bundle has neither level files nor a switch-once pair")
            bundle = opened
            engine = LevelEngine(opened)
            ladder = rungs
            val cost = engine!!.switchTo(rungs[0])
            ui.post {
                status.text = "bundle ok: ${opened.manifest.artifacts.size} files verified; opened in %.1f ms".format(cost)
                picker.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item,
                    rungs.map { "alpha %.2f %s".format(it.alpha, if (it.levelPath != null) "(level file)" else "(switch-once)") })
            }
            infer()
        } catch (error: BundleError) {
            showError("bundle refused: ${error.message}")
        } catch (error: Exception) {
            showError("could not load the bundle: ${error.javaClass.simpleName}: ${error.message}")
        }
    }

    private fun switchTo(index: Int, why: String) = worker.execute {
        val engine = engine ?: return@execute
        if (engine.rung == ladder[index]) return@execute
        try {
            val cost = engine.switchTo(ladder[index])
            recent.clear() // the latency statistic describes the current level only
            ui.post { status.text = "switched to alpha %.2f (%s) in %.1f ms".format(ladder[index].alpha, why, cost) }
            infer()
        } catch (error: Exception) {
            showError("could not switch: ${error.message}")
        }
    }

    /** Run the current sample on the worker and show prediction and latency. */
    private fun infer() = worker.execute {
        val engine = engine ?: return@execute
        val manifest = bundle!!.manifest
        val images = manifest.json.getAsJsonObject("samples").getAsJsonArray("images")
        if (images.size() == 0) return@execute
        val flat = ArrayList<Float>()
        fun collect(e: com.google.gson.JsonElement) { if (e.isJsonArray) e.asJsonArray.forEach { collect(it) } else flat.add(e.asFloat) }
        collect(images[sample % images.size()]) // already preprocessed, NCHW
        val input = flat.toFloatArray()
        try {
            val (logits, ms) = engine.predict(input)
            synchronized(recent) {
                recent.add(ms)
                if (recent.size > 20) recent.removeAt(0)
            }
            val best = logits.indices.maxByOrNull { logits[it] } ?: 0
            val bitmap = sampleBitmap(input)
            ui.post {
                image.setImageBitmap(bitmap)
                result.text = "prediction: ${manifest.classes[best]}   %.2f ms (median %.2f ms)".format(ms, median())
            }
        } catch (error: Exception) {
            showError("inference failed: ${error.message}")
        }
    }

    private fun median(): Double = synchronized(recent) { recent.sorted() }.let { if (it.isEmpty()) Double.NaN else it[it.size / 2] }

    private fun sampleBitmap(input: FloatArray): Bitmap {
        val spec = bundle!!.manifest.input
        val bitmap = Bitmap.createBitmap(spec.width, spec.height, Bitmap.Config.ARGB_8888)
        for (y in 0 until spec.height) for (x in 0 until spec.width) {
            val v = (lcs.core.Preprocess.toUnit(spec, input[y * spec.width + x], 0) * 255).toInt() // channel 0
            bitmap.setPixel(x, y, Color.rgb(v, v, v))
        }
        return Bitmap.createScaledBitmap(bitmap, 320, 320, false)
    }

    /** Auto mode: read the device's signals, ask the policy, switch when it says so. */
    private fun tick() {
        if (!auto.isChecked || engine == null) return
        val battery = getSystemService(BatteryManager::class.java)
        val power = getSystemService(PowerManager::class.java)
        val capacity = battery.getIntProperty(BatteryManager.BATTERY_PROPERTY_CAPACITY)
        val thermal = if (simulate.isChecked) "serious" else Policy.mapThermal("android", power.currentThermalStatus)
        val signals = Signals(
            nowMs = SystemClock.elapsedRealtime().toDouble(),
            batteryFraction = if (capacity in 0..100) capacity / 100.0 else null,
            charging = battery.isCharging,
            lowPowerMode = power.isPowerSaveMode,
            thermal = thermal,
            latencyMs = median(),
            latencyBudgetMs = LATENCY_BUDGET_MS
        )
        try {
            val decision = Policy.decide(ladder.map { PolicyLevel(it.alpha, it.cost) }, signals, policyState)
            policyState = decision.state
            signalsView.text = "battery ${signals.batteryFraction ?: "unknown"} charging ${signals.charging} " +
                "low power ${signals.lowPowerMode} thermal $thermal\nlevel ${decision.level}: ${decision.reason}"
            if (picker.selectedItemPosition != decision.level) picker.setSelection(decision.level)
            switchTo(decision.level, "auto")
        } catch (error: IllegalArgumentException) {
            showError("policy: ${error.message}")
            return
        }
        infer()
        ui.postDelayed({ tick() }, TICK_MS)
    }

    companion object {
        const val LATENCY_BUDGET_MS = 20.0
        const val TICK_MS = 500L
    }
}
