// Unit tests for reading switchboard's own JSON without losing digits (http/exact_json.h).
#include <gtest/gtest.h>

#include <string>

#include "http/exact_json.h"

namespace switchboard {
namespace {

TEST(ExactJson, ValuesADoubleHoldsAreNumbers)
{
	Json j = ParseKeepingDigits(R"({"a": 59.00, "b": 0.1, "c": -12.5e3, "d": 123456789012345, "e": 1e-5, "f": 0})");
	ASSERT_FALSE(j.is_discarded());
	EXPECT_EQ(j, Json::parse(R"({"a": 59.0, "b": 0.1, "c": -12500.0, "d": 123456789012345, "e": 1e-5, "f": 0})"));
	EXPECT_TRUE(j["a"].is_number_float());
	EXPECT_TRUE(j["d"].is_number_integer());
}

TEST(ExactJson, DigitsADoubleWouldRoundStayText)
{
	Json j = ParseKeepingDigits(
	    R"({"amount": 12345678901234567.89, "id": 9223372036854775807, "huge": 123456789012345678901234567890,
	        "tiny": 1e-320, "neg": -0.1234567890123456789, "list": [1.5, 3.14159265358979323846]})");
	ASSERT_FALSE(j.is_discarded());
	EXPECT_EQ(j["amount"], "12345678901234567.89"); // not 12345678901234568
	EXPECT_EQ(j["id"], 9223372036854775807LL);      // 64-bit integers stay exact numbers
	EXPECT_EQ(j["huge"], "123456789012345678901234567890");
	EXPECT_EQ(j["tiny"], "1e-320");
	EXPECT_EQ(j["neg"], "-0.1234567890123456789");
	EXPECT_EQ(j["list"][0], 1.5);
	EXPECT_EQ(j["list"][1], "3.14159265358979323846");
}

TEST(ExactJson, NestingAndOrderAsTheParser)
{
	const std::string text = R"({"z": {"y": [[], {}, [null, true, false, "s\u00e9"]]}, "a": "x"})";
	EXPECT_EQ(ParseKeepingDigits(text), Json::parse(text));
	EXPECT_EQ(ParseKeepingDigits("[]"), Json::array());
	EXPECT_EQ(ParseKeepingDigits("\"only\""), "only");
}

TEST(ExactJson, NotJsonIsDiscarded)
{
	EXPECT_TRUE(ParseKeepingDigits("{\"a\": ").is_discarded());
	EXPECT_TRUE(ParseKeepingDigits("nope").is_discarded());
	EXPECT_TRUE(ParseKeepingDigits("{\"a\": 1e999}").is_discarded());
	EXPECT_TRUE(ParseKeepingDigits("").is_discarded());
}

TEST(ExactJson, SignificantDigits)
{
	EXPECT_TRUE(DoubleHoldsExactly("0.000000000000000000000000000000001"));
	EXPECT_TRUE(DoubleHoldsExactly("100000000000000000000000000000000000.0"));
	EXPECT_TRUE(DoubleHoldsExactly("999999999999999"));
	EXPECT_FALSE(DoubleHoldsExactly("9999999999999999.5"));
	EXPECT_TRUE(DoubleHoldsExactly("1.50000000000000000000"));
	EXPECT_FALSE(DoubleHoldsExactly("1e-300"));
	EXPECT_FALSE(DoubleHoldsExactly("1E+400"));
	EXPECT_TRUE(DoubleHoldsExactly("-0.0"));
}

} // namespace
} // namespace switchboard
