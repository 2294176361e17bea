package lcs.core

import com.google.gson.JsonElement
import com.google.gson.JsonObject
import com.google.gson.JsonParser
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import java.io.File

/** Every case of sample_apps/policy/cases.json through the Kotlin policy. */
class PolicyCasesTest {
    private val policyDir = File(System.getProperty("lcs.policyDir") ?: "../../policy")
    private val table = JsonParser.parseString(File(policyDir, "cases.json").readText()).asJsonObject

    private fun number(e: JsonElement?): Double? = when {
        e == null || e.isJsonNull -> null
        e.isJsonPrimitive && e.asJsonPrimitive.isString && e.asString == "NaN" -> Double.NaN
        else -> e.asDouble
    }

    private fun signalsOf(o: JsonObject) = Signals(
        nowMs = number(o.get("nowMs")),
        batteryFraction = number(o.get("batteryFraction")),
        charging = o.get("charging")?.let { if (it.isJsonNull) null else it.asBoolean },
        lowPowerMode = o.get("lowPowerMode")?.asBoolean ?: false,
        thermal = o.get("thermal")?.asString ?: "nominal",
        latencyMs = number(o.get("latencyMs")),
        latencyBudgetMs = number(o.get("latencyBudgetMs"))
    )

    @Test
    fun inlinedDefaultEqualsPolicyJson() {
        assertEquals(JsonParser.parseString(File(policyDir, "policy.json").readText()), PolicyConfig.DEFAULT.json)
    }

    @Test
    fun everyDecisionCase() {
        val cases = table.getAsJsonArray("decisions")
        assertTrue("at least 40 cases", cases.size() >= 40)
        val failures = mutableListOf<String>()
        var steps = 0
        for (element in cases) {
            val case = element.asJsonObject
            val name = case.get("name").asString
            val levels = case.getAsJsonArray("levels").map {
                PolicyLevel(it.asJsonObject.get("alpha").asDouble, it.asJsonObject.get("cost").asDouble)
            }
            val policy = case.getAsJsonObject("policy")?.let { PolicyConfig.DEFAULT.with(it) } ?: PolicyConfig.DEFAULT
            var state = case.getAsJsonObject("state")?.let {
                PolicyState(if (it.get("level").isJsonNull) null else it.get("level").asInt, number(it.get("sinceMs")))
            } ?: Policy.initialState()
            val merged = JsonObject()
            for ((index, stepElement) in case.getAsJsonArray("steps").withIndex()) {
                val step = stepElement.asJsonObject
                for ((key, value) in step.getAsJsonObject("signals").entrySet()) merged.add(key, value)
                val decision = Policy.decide(levels, signalsOf(merged), state, policy)
                val expect = step.getAsJsonObject("expect")
                val where = "$name, step $index: level ${decision.level}, since ${decision.state.sinceMs}, reason '${decision.reason}'"
                steps++
                if (decision.level != expect.get("level").asInt || decision.state.level != decision.level) failures.add("$where; expected level ${expect.get("level")}")
                expect.get("reasonHas")?.let { if (!decision.reason.contains(it.asString)) failures.add("$where; expected reason with '${it.asString}'") }
                if (expect.has("sinceMs") && decision.state.sinceMs != number(expect.get("sinceMs"))) failures.add("$where; expected since ${expect.get("sinceMs")}")
                state = decision.state
            }
        }
        if (failures.isNotEmpty()) fail(failures.joinToString("\n"))
        println("policy cases: ${cases.size()} cases, $steps steps passed")
    }

    @Test
    fun everyThermalCase() {
        for (element in table.getAsJsonArray("thermal")) {
            val case = element.asJsonObject
            val raw = case.get("value")
            val value: Any? = when {
                raw.isJsonNull -> null
                raw.asJsonPrimitive.isString -> raw.asString
                raw.asDouble == Math.floor(raw.asDouble) -> raw.asLong.toInt()
                else -> raw.asDouble
            }
            assertEquals(case.toString(), case.get("expect").asString, Policy.mapThermal(case.get("platform").asString, value))
        }
    }

    @Test
    fun refusesLevelsThatCannotBeUsed() {
        for (levels in listOf(emptyList(), listOf(PolicyLevel(0.0, 0.0)), listOf(PolicyLevel(0.0, Double.NaN)))) {
            try {
                Policy.decide(levels, Signals(0.0), Policy.initialState())
                fail("accepted $levels")
            } catch (expected: IllegalArgumentException) {
            }
        }
    }
}
